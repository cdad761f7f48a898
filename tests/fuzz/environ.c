/* See environ.h. */
#include "environ.h"

#include <stdlib.h>
#include <string.h>

bool environ_each(const uint8_t *data, size_t size, environ_entry_fn each, void *ctx)
{
	char *copy = malloc(size + 1);
	if (copy == NULL)
		return false;
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (size_t off = 0; off < size; off += strlen(copy + off) + 1)
		each(copy + off, ctx);
	free(copy);
	return true;
}

void environ_set(const char *entry)
{
	const char *eq = strchr(entry, '=');
	if (eq == NULL || eq == entry)
		return;
	char *name = strndup(entry, (size_t)(eq - entry));
	if (name != NULL)
		setenv(name, eq + 1, 1);
	free(name);
}
