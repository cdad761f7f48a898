/* batch-agent-aws, as installed from a static build: starts the helper of the bundle
 * beside it through the bundle's own loader and libraries (cmake/AwsBundle.cmake), so
 * that libcurl runs in any image, whatever its libc, or with none:
 *
 *   DIR/batch-agent-aws ARGS...        this program, static
 *     execve DIR/aws/lib/ld.so --inhibit-cache --library-path DIR/aws/lib
 *            --argv0 batch-agent-aws DIR/aws/batch-agent-aws ARGS...
 *
 * --inhibit-cache keeps the loader off the image's /etc/ld.so.cache, so every library
 * comes from the bundle. The CA store is chosen here too, because only the bundle knows
 * where its own copy lies: AWS_CA_BUNDLE when set; else the image's store at the first
 * of the usual places; else the bundle's copy, taken from the build machine.
 *
 * One job, s6 style: if the loader cannot be executed, say which file and why, and exit
 * 70 (the agent's "internal error": its installation is incomplete). */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_BROKEN_INSTALL 70
#define LOADER_ARGS 7

/* Debian and Ubuntu (and distroless), Alpine; Amazon Linux, RHEL and Fedora; SUSE. */
static const char *const image_ca_stores[] = {
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/ca-bundle.pem",
};

/* DIR/NAME into out (PATH_MAX bytes); false when it does not fit. */
static bool join(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
	return n > 0 && n < PATH_MAX;
}

static bool bundle_dir(char *out)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	char *slash = NULL;
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
	}
	if (slash == NULL)
		return join(out, BATCH_AGENT_LIBEXECDIR, "aws"); /* no /proc: where it was installed */
	*slash = '\0';
	return join(out, self, "aws");
}

static void choose_ca_store(const char *bundle)
{
	const char *given = getenv("AWS_CA_BUNDLE");
	if (given != NULL && *given != '\0')
		return;
	for (size_t i = 0; i < sizeof image_ca_stores / sizeof image_ca_stores[0]; i++) {
		if (access(image_ca_stores[i], R_OK) == 0) {
			setenv("AWS_CA_BUNDLE", image_ca_stores[i], 1);
			return;
		}
	}
	char own[PATH_MAX];
	if (join(own, bundle, "ca-certificates.crt") && access(own, R_OK) == 0)
		setenv("AWS_CA_BUNDLE", own, 1);
}

int main(int argc, char **argv)
{
	char bundle[PATH_MAX], loader[PATH_MAX], libraries[PATH_MAX], program[PATH_MAX];
	if (!bundle_dir(bundle) || !join(loader, bundle, "lib/ld.so") || !join(libraries, bundle, "lib") ||
	    !join(program, bundle, "batch-agent-aws")) {
		fprintf(stderr, "batch-agent-aws: the path of the bundle beside this program is too long\n");
		return EXIT_BROKEN_INSTALL;
	}
	choose_ca_store(bundle);

	char **args = calloc((size_t)argc + LOADER_ARGS + 1, sizeof *args);
	if (args == NULL) {
		fprintf(stderr, "batch-agent-aws: out of memory\n");
		return EXIT_BROKEN_INSTALL;
	}
	size_t n = 0;
	args[n++] = loader;
	args[n++] = "--inhibit-cache";
	args[n++] = "--library-path";
	args[n++] = libraries;
	args[n++] = "--argv0";
	args[n++] = "batch-agent-aws";
	args[n++] = program;
	for (int i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	execv(loader, args);
	fprintf(stderr, "batch-agent-aws: cannot execute the bundle's loader %s: %s\n", loader, strerror(errno));
	free(args);
	return EXIT_BROKEN_INSTALL;
}
