/* A worker pool's membership and its files. */
#include "members.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "peerview.h"
#include "util.h"

enum ba_status members_init(struct members *ms)
{
	*ms = (struct members){ 0 };
	char tmp_buf[PATH_MAX];
	const char *tmp = util_temp_dir(tmp_buf, sizeof tmp_buf);
	ms->by_index = calloc(MEMBERS_ARRAY_MAX, sizeof *ms->by_index);
	if (ms->by_index == NULL) {
		log_error("out of memory for the pool's members");
		return BA_EX_OSERR;
	}
	if (strlen(tmp) + sizeof "/batch-agent-pool.XXXXXX" > sizeof ms->dir) {
		log_error("TMPDIR (%zu bytes) is too long for the pool's directory", strlen(tmp));
		return BA_EX_CONFIG;
	}
	snprintf(ms->dir, sizeof ms->dir, "%s/batch-agent-pool.XXXXXX", tmp);
	if (mkdtemp(ms->dir) == NULL) {
		log_error("cannot create the pool's directory in %s: %m", tmp);
		ms->dir[0] = '\0';
		return BA_EX_OSERR;
	}
	/* PROGRAM may run as another user than the agent: it must read what is here. */
	chmod(ms->dir, 0755);
	snprintf(ms->path, sizeof ms->path, "%s/members.json", ms->dir);
	snprintf(ms->hostfile, sizeof ms->hostfile, "%s/hostfile", ms->dir);
	return BA_OK;
}

void members_free(struct members *ms)
{
	if (ms->dir[0]) {
		char tmp[sizeof ms->path + 4];
		snprintf(tmp, sizeof tmp, "%s.new", ms->path);
		unlink(tmp);
		unlink(ms->path);
		unlink(ms->hostfile);
		if (rmdir(ms->dir) < 0 && errno != ENOENT)
			log_warn("cannot remove the pool's directory %s: %m", ms->dir);
	}
	for (size_t i = 0; i < ms->count; i++) {
		cJSON_free(ms->all[i]->json);
		free(ms->all[i]);
	}
	free(ms->all);
	free(ms->by_index);
	*ms = (struct members){ 0 };
}

struct member *members_find(const struct members *ms, const char *job_id, long array_index)
{
	if (array_index >= 0)
		return array_index < MEMBERS_ARRAY_MAX ? ms->by_index[array_index] : NULL;
	/* Separate jobs are few (a pool is an array, plus replacements): a walk will do. */
	for (size_t i = 0; i < ms->count; i++)
		if (ms->all[i]->array_index < 0 && strcmp(ms->all[i]->job_id, job_id) == 0)
			return ms->all[i];
	return NULL;
}

enum ba_status members_add(struct members *ms, const char *job_id, long array_index, struct member **out)
{
	if (ms->count == ms->capacity) {
		size_t capacity = ms->capacity ? ms->capacity * 2 : 64;
		struct member **all = realloc(ms->all, capacity * sizeof *all);
		if (all == NULL)
			return BA_EX_OSERR;
		ms->all = all;
		ms->capacity = capacity;
	}
	struct member *m = calloc(1, sizeof *m);
	if (m == NULL)
		return BA_EX_OSERR;
	snprintf(m->job_id, sizeof m->job_id, "%s", job_id);
	m->array_index = array_index;
	m->arrival = (long)ms->count;
	m->state = MEMBER_LOST;
	m->memory_bytes = -1;
	ms->all[ms->count++] = m;
	if (array_index >= 0 && array_index < MEMBERS_ARRAY_MAX)
		ms->by_index[array_index] = m;
	*out = m;
	return BA_OK;
}

void members_set_state(struct members *ms, struct member *m, enum member_state state)
{
	ms->joined += (state == MEMBER_JOINED) - (m->state == MEMBER_JOINED);
	m->state = state;
	members_touch(m);
}

void members_touch(struct member *m)
{
	cJSON_free(m->json);
	m->json = NULL;
}

const char *members_state_name(enum member_state state)
{
	static const char *const names[] = { [MEMBER_JOINED] = "joined", [MEMBER_DRAINING] = "draining",
					     [MEMBER_LOST] = "lost", [MEMBER_EXITED] = "exited" };
	return names[state];
}

/* Array children by index, then separate jobs by arrival. */
static int by_order(const void *a, const void *b)
{
	const struct member *x = *(struct member *const *)a, *y = *(struct member *const *)b;
	if ((x->array_index < 0) != (y->array_index < 0))
		return x->array_index < 0 ? 1 : -1;
	if (x->array_index != y->array_index)
		return x->array_index < y->array_index ? -1 : 1;
	return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

static struct member **ordered(const struct members *ms)
{
	struct member **list = malloc((ms->count ? ms->count : 1) * sizeof *list);
	if (list == NULL)
		return NULL;
	memcpy(list, ms->all, ms->count * sizeof *list);
	qsort(list, ms->count, sizeof *list, by_order);
	return list;
}

char *members_addresses(const struct members *ms, long *count, enum hostfile_format format, char **lines)
{
	struct member **list = ordered(ms);
	size_t capacity = ms->count * (ADDRESS_ADVERTISED_MAX + 1) + 1, used = 0;
	size_t line_capacity = ms->count * PEERVIEW_LINE_MAX + 1, line_used = 0;
	char *text = list ? malloc(capacity) : NULL;
	*lines = text ? malloc(line_capacity) : NULL;
	*count = 0;
	if (*lines == NULL) {
		free(text);
		free(list);
		return NULL;
	}
	text[0] = (*lines)[0] = '\0';
	for (size_t i = 0; i < ms->count; i++)
		if (list[i]->state == MEMBER_JOINED) {
			used += (size_t)snprintf(text + used, capacity - used, "%s%s", *count ? "," : "", list[i]->address);
			line_used += peerview_hostfile_line(format, list[i]->address, list[i]->cpus, *lines + line_used,
							    line_capacity - line_used);
			++*count;
		}
	free(list);
	return text;
}

enum ba_status members_write_hostfile(const struct members *ms, const char *lines)
{
	int fd = open(ms->hostfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	/* Readable by PROGRAM whatever our umask (it may run as another user). */
	enum ba_status rc = fd < 0 || fchmod(fd, 0644) < 0 ? BA_EX_OSERR : util_write_all(fd, lines, strlen(lines));
	if (fd >= 0 && close(fd) < 0)
		rc = BA_EX_OSERR;
	if (rc != BA_OK)
		log_error("cannot write the hostfile %s: %m", ms->hostfile);
	return rc;
}

static cJSON *number_or_null(bool known, double value)
{
	return known ? cJSON_CreateNumber(value) : cJSON_CreateNull();
}

static cJSON *describe(const struct member *m)
{
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return NULL;
	bool exited = m->exit_reported;
	cJSON_AddStringToObject(o, "job_id", m->job_id);
	cJSON_AddItemToObject(o, "array_index", number_or_null(m->array_index >= 0, (double)m->array_index));
	cJSON_AddStringToObject(o, "address", m->address);
	cJSON_AddStringToObject(o, "hostname", m->hostname);
	cJSON_AddItemToObject(o, "cpus", number_or_null(m->cpus > 0, m->cpus));
	cJSON_AddItemToObject(o, "memory_limit_bytes", number_or_null(m->memory_bytes >= 0, (double)m->memory_bytes));
	cJSON_AddStringToObject(o, "state", members_state_name(m->state));
	cJSON_AddItemToObject(o, "exit_code", number_or_null(exited && !m->signaled, m->exit_value));
	cJSON_AddItemToObject(o, "exit_signal", number_or_null(exited && m->signaled, m->exit_value));
	cJSON_AddItemToObject(o, "drain_reason",
			      m->drain_reason[0] ? cJSON_CreateString(m->drain_reason) : cJSON_CreateNull());
	return o;
}

/* The document with an empty member list: {"generation":G,...,"members":[]}. */
static char *render_head(const struct members *ms, long wanted)
{
	cJSON *doc = cJSON_CreateObject();
	char *text = NULL;
	if (doc != NULL && cJSON_AddNumberToObject(doc, "generation", (double)ms->generation) &&
	    cJSON_AddNumberToObject(doc, "workers_wanted", (double)wanted) &&
	    cJSON_AddNumberToObject(doc, "joined", (double)ms->joined) && cJSON_AddArrayToObject(doc, "members"))
		text = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	return text;
}

static bool render_member(struct member *m)
{
	if (m->json != NULL)
		return true;
	cJSON *item = describe(m);
	m->json = item ? cJSON_PrintUnformatted(item) : NULL;
	m->json_length = m->json ? strlen(m->json) : 0;
	cJSON_Delete(item);
	return m->json != NULL;
}

/* Each member's entry is rendered once per change of that member and kept: a join
 * among a thousand members renders one entry and copies the others, rather than
 * building the whole document again. The entries go where the head's empty list is. */
static char *render(const struct members *ms, long wanted)
{
	struct member **list = ordered(ms);
	char *head = list ? render_head(ms, wanted) : NULL, *text = NULL;
	size_t length = head ? strlen(head) + 2 : 0, used;
	for (size_t i = 0; head && i < ms->count; i++) {
		if (!render_member(list[i]))
			goto out;
		length += list[i]->json_length + 1;
	}
	if (head == NULL || (text = malloc(length)) == NULL)
		goto out;
	used = strlen(head) - 2; /* the head up to and with the "[" of its "[]}" */
	memcpy(text, head, used);
	for (size_t i = 0; i < ms->count; i++) {
		if (i > 0)
			text[used++] = ',';
		memcpy(text + used, list[i]->json, list[i]->json_length);
		used += list[i]->json_length;
	}
	memcpy(text + used, "]}\n", 4);
out:
	cJSON_free(head);
	free(list);
	return text;
}

enum ba_status members_write_file(struct members *ms, long wanted)
{
	char tmp[sizeof ms->path + 4];
	ms->generation++;
	char *text = render(ms, wanted);
	if (text == NULL) {
		ms->generation--;
		log_error("out of memory for the membership file");
		return BA_EX_OSERR;
	}
	snprintf(tmp, sizeof tmp, "%s.new", ms->path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	enum ba_status rc = fd < 0 || fchmod(fd, 0644) < 0 ? BA_EX_OSERR : util_write_all(fd, text, strlen(text));
	if (fd >= 0 && close(fd) < 0)
		rc = BA_EX_OSERR;
	/* rename(2) replaces the old file in one step: a reader has the old or the new. */
	if (rc == BA_OK && rename(tmp, ms->path) < 0)
		rc = BA_EX_OSERR;
	if (rc != BA_OK) {
		log_error("cannot write the membership file %s: %m", ms->path);
		unlink(tmp);
		ms->generation--; /* PROGRAM never saw this one */
	}
	free(text);
	return rc;
}
