/* The Spot notice watcher, seen from the agent's loop. */
#include "spotwatch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "awsquery.h"
#include "log.h"
#include "util.h"
#include "status.h"

#define LINE_MAX_BYTES 4096

struct spotwatch {
	struct loop *loop;
	bool required;
	spotwatch_fn fn;
	void *ctx;
	pid_t pid;
	int fd;
	char line[LINE_MAX_BYTES];
	size_t length;
};

bool spotwatch_wanted(const struct config *cfg, bool auto_allowed)
{
	if (cfg->spot_watch == SPOT_WATCH_ON)
		return true;
	return cfg->spot_watch == SPOT_WATCH_AUTO && auto_allowed && getenv("ECS_CONTAINER_METADATA_URI_V4") != NULL;
}

static void handle_line(struct spotwatch *watch, const char *line)
{
	cJSON *notice = util_json_parse(line, strlen(line), NULL);
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(notice, "type");
	const cJSON *action = cJSON_GetObjectItemCaseSensitive(notice, "action");
	const cJSON *time = cJSON_GetObjectItemCaseSensitive(notice, "time");
	if (!cJSON_IsString(type)) {
		log_warn("spot watcher printed an unreadable notice (%zu bytes): ignored", strlen(line));
	} else {
		watch->fn(watch->ctx, type->valuestring, cJSON_IsString(action) ? action->valuestring : NULL,
			  cJSON_IsString(time) ? time->valuestring : NULL);
	}
	cJSON_Delete(notice);
}

static void close_pipe(struct spotwatch *watch)
{
	if (watch->fd < 0)
		return;
	loop_remove(watch->loop, watch->fd);
	close(watch->fd);
	watch->fd = -1;
}

static void on_output(struct loop *loop, int fd, uint32_t events, void *ctx)
{
	struct spotwatch *watch = ctx;
	(void)loop;
	(void)events;
	for (;;) {
		char chunk[512];
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close_pipe(watch);
			return;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (chunk[i] == '\n') {
				watch->line[watch->length] = '\0';
				handle_line(watch, watch->line);
				watch->length = 0;
			} else if (watch->length + 1 < sizeof watch->line) {
				watch->line[watch->length++] = chunk[i];
			}
		}
	}
}

enum ba_status spotwatch_start(struct spotwatch **out, struct loop *loop, bool required, spotwatch_fn fn, void *ctx)
{
	/* Where --spot-watch is auto, an IMDS that does not answer is the common case
	 * (no EC2, or a bridge network with hop limit 1), not an error worth a line. */
	const char *args[] = { "spot-watch", required ? NULL : "--optional", NULL };
	struct spotwatch *watch = calloc(1, sizeof *watch);
	if (watch == NULL)
		return BA_EX_OSERR;
	*watch = (struct spotwatch){ .loop = loop, .required = required, .fn = fn, .ctx = ctx, .fd = -1 };
	enum ba_status rc = awsquery_spawn(args, &watch->pid, &watch->fd);
	if (rc == BA_OK)
		rc = loop_add(loop, watch->fd, EPOLLIN, on_output, watch);
	if (rc != BA_OK) {
		/* A watcher we cannot hear must not run on, to be taken for a leftover. */
		if (watch->pid > 0) {
			kill(watch->pid, SIGKILL);
			waitpid(watch->pid, NULL, 0);
		}
		spotwatch_free(watch);
		return rc;
	}
	log_debug("watching for Spot notices (pid %ld)", (long)watch->pid);
	*out = watch;
	return BA_OK;
}

bool spotwatch_reaped(struct spotwatch *watch, pid_t pid, int wait_status)
{
	if (watch == NULL || pid != watch->pid)
		return false;
	watch->pid = 0;
	bool unavailable = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == BA_EX_UNAVAILABLE;
	if (unavailable && !watch->required)
		log_debug("no Spot notices to watch: the instance metadata service does not answer");
	else if (unavailable)
		log_warn("--spot-watch on, but the instance metadata service does not answer: not watching");
	else if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) != 0)
		log_warn("the Spot notice watcher exited with status %d: not watching", WEXITSTATUS(wait_status));
	else if (WIFSIGNALED(wait_status) && WTERMSIG(wait_status) != SIGTERM && WTERMSIG(wait_status) != SIGKILL)
		log_warn("the Spot notice watcher died of signal %d: not watching", WTERMSIG(wait_status));
	return true;
}

void spotwatch_stop(struct spotwatch *watch)
{
	if (watch != NULL && watch->pid > 0)
		kill(watch->pid, SIGTERM);
}

bool spotwatch_running(const struct spotwatch *watch)
{
	return watch != NULL && watch->pid > 0;
}

void spotwatch_kill(struct spotwatch *watch)
{
	if (spotwatch_running(watch))
		kill(watch->pid, SIGKILL);
}

void spotwatch_free(struct spotwatch *watch)
{
	if (watch == NULL)
		return;
	close_pipe(watch);
	free(watch);
}
