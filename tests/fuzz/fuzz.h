/* What every fuzz target shares: libFuzzer's entry points and the one way a target
 * says that a property it checks does not hold.
 *
 * A failed FUZZ_CHECK is a finding like a sanitizer report: it names the property in
 * the sanitizer's report (which libFuzzer keeps even when -close_fd_mask closes the
 * target's stderr, where the agent's own log lines go) and aborts, so that libFuzzer
 * saves the input. */
#ifndef BATCH_AGENT_FUZZ_H
#define BATCH_AGENT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <sanitizer/common_interface_defs.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_STR2(x) #x
#define FUZZ_STR(x) FUZZ_STR2(x)
#define FUZZ_CHECK(cond)                                                                                         \
	do {                                                                                                     \
		if (!(cond)) {                                                                                   \
			__sanitizer_report_error_summary("FUZZ_CHECK failed: " #cond " at " __FILE__            \
							 ":" FUZZ_STR(__LINE__));                               \
			abort();                                                                                 \
		}                                                                                                \
	} while (0)

#endif
