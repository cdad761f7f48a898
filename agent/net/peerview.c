/* The peer view (peerview.h): one hostfile and one set of variables, built the same
 * way from the main's registry and from a child's roster. */
#include "peerview.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "log.h"
#include "util.h"

#define TORCH_DEFAULT_PORT "29500" /* torchrun's own default for --master-port */

/* At least one slot: a node with half a CPU still runs a rank. */
size_t peerview_hostfile_line(enum hostfile_format format, const char *address, double cpus, char *out, size_t size)
{
	long slots = cpus >= 1 ? (long)floor(cpus) : 1;
	if (format == HOSTFILE_OPENMPI && cpus > 0)
		return (size_t)snprintf(out, size, "%s slots=%ld\n", address, slots);
	if (format == HOSTFILE_MPICH && cpus > 0)
		return (size_t)snprintf(out, size, "%s:%ld\n", address, slots);
	return (size_t)snprintf(out, size, "%s\n", address);
}

/* One write(2), so that a reader never sees half a file written by a live agent. */
static enum ba_status write_hostfile(struct peer_view *view, const struct config *cfg,
				     const struct peerview_node *nodes, size_t count)
{
	size_t capacity = count * PEERVIEW_LINE_MAX + 1, used = 0;
	char *text = malloc(capacity), dir_buf[PATH_MAX];
	if (text == NULL) {
		log_error("out of memory writing the hostfile");
		return BA_EX_OSERR;
	}
	for (size_t i = 0; i < count; i++)
		used += peerview_hostfile_line(cfg->hostfile_format, nodes[i].address, nodes[i].cpus, text + used,
					       capacity - used);
	const char *dir = util_temp_dir(dir_buf, sizeof dir_buf);
	snprintf(view->hostfile, sizeof view->hostfile, "%s/batch-agent-hostfile.XXXXXX", dir);
	int fd = mkstemp(view->hostfile);
	enum ba_status rc = BA_EX_OSERR;
	if (fd < 0) {
		log_error("cannot create the hostfile in %s: %m", dir);
		view->hostfile[0] = '\0';
	} else {
		fchmod(fd, 0644);
		rc = util_write_all(fd, text, used);
		if (rc != BA_OK)
			log_error("writing the hostfile %s: %m", view->hostfile);
		if (close(fd) != 0 && rc == BA_OK) {
			log_error("writing the hostfile %s: %m", view->hostfile);
			rc = BA_EX_OSERR;
		}
	}
	free(text);
	return rc;
}

static char *node_list(const struct peerview_node *nodes, size_t count)
{
	size_t capacity = count * (ADDRESS_ADVERTISED_MAX + 1) + 1, used = 0;
	char *list = malloc(capacity);
	if (list == NULL)
		return NULL;
	list[0] = '\0';
	for (size_t i = 0; i < count; i++)
		used += (size_t)snprintf(list + used, capacity - used, "%s%s", i ? "," : "", nodes[i].address);
	return list;
}

static bool add_env(struct peer_view *view, const char *name, const char *value)
{
	size_t i = 0;
	while (view->env[i] != NULL)
		i++;
	if (i >= PEERVIEW_ENV_MAX || asprintf(&view->env[i], "%s=%s", name, value) < 0) {
		view->env[i] = NULL;
		return false;
	}
	return true;
}

/* MASTER_PORT the user set (a job definition's environment) is kept: it is theirs. */
static enum ba_status torch_port(const char **out)
{
	const char *port = getenv("MASTER_PORT");
	long value = 0;
	if (port == NULL) {
		*out = TORCH_DEFAULT_PORT;
		return BA_OK;
	}
	if (!util_parse_long(port, 1, 65535, &value)) {
		log_error("MASTER_PORT=\"%s\" is not a port number from 1 to 65535 (--env torch)", port);
		return BA_EX_CONFIG;
	}
	*out = port;
	return BA_OK;
}

static enum ba_status build_env(struct peer_view *view, const struct config *cfg, const struct peerview_node *nodes,
				size_t count, size_t rank)
{
	char rank_text[24], count_text[24];
	const char *port = NULL;
	snprintf(rank_text, sizeof rank_text, "%zu", rank);
	snprintf(count_text, sizeof count_text, "%zu", count);
	bool ok = add_env(view, "BATCH_AGENT_NODE_RANK", rank_text) && add_env(view, "BATCH_AGENT_NUM_NODES", count_text);
	if (ok && cfg->env_torch) {
		enum ba_status rc = torch_port(&port);
		if (rc != BA_OK)
			return rc;
		ok = add_env(view, "MASTER_ADDR", nodes[0].address) && add_env(view, "MASTER_PORT", port) &&
		     add_env(view, "WORLD_SIZE", count_text) && add_env(view, "NODE_RANK", rank_text);
	}
	return ok ? BA_OK : BA_EX_OSERR;
}

enum ba_status peerview_make(struct peer_view *view, const struct config *cfg, const struct peerview_node *nodes,
			     size_t count, size_t rank)
{
	memset(view, 0, sizeof *view);
	view->nodes = node_list(nodes, count);
	enum ba_status rc = view->nodes != NULL ? build_env(view, cfg, nodes, count, rank) : BA_EX_OSERR;
	if (rc == BA_EX_OSERR)
		log_error("out of memory building the node list");
	if (rc == BA_OK)
		rc = write_hostfile(view, cfg, nodes, count);
	return rc;
}

void peerview_vars(const struct peer_view *view, struct launch_vars *vars)
{
	vars->hostfile = view->hostfile;
	vars->nodes = view->nodes;
	vars->extra_env = (const char *const *)view->env;
}

void peerview_release(struct peer_view *view)
{
	if (view->hostfile[0])
		unlink(view->hostfile);
	view->hostfile[0] = '\0';
	free(view->nodes);
	view->nodes = NULL;
	for (size_t i = 0; view->env[i] != NULL; i++) {
		free(view->env[i]);
		view->env[i] = NULL;
	}
}
