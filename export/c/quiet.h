/* quiet.h: keeps TensorFlow's logging off a client's stderr.
 *
 * libtensorflow logs from its static initializers, before main() runs ("oneDNN custom
 * operations are on", "Could not find cuda drivers", ...), and reads TF_CPP_MIN_LOG_LEVEL
 * once, at its first message, so setenv() in main() comes too late (and glibc's own
 * initializer, which runs after anything earlier, resets the environment). Linking
 * quiet.c into an executable does two things, only when the caller has not set
 * TF_CPP_MIN_LOG_LEVEL (if it has, TensorFlow logs as asked and nothing changes):
 *
 *   - it defines getenv(), which an executable's symbol takes over for every shared
 *     library, and answers "3" (fatal errors only) for TF_CPP_MIN_LOG_LEVEL; any other
 *     name gets what glibc's getenv would return (the same scan of environ);
 *   - a function in its .preinit_array, which the dynamic loader runs before any
 *     library's initializer, points fd 2 at /dev/null: the start-up lines above come
 *     through absl before its log level applies. main() calls tfc_restore_stderr() first
 *     thing, and from then on stderr is the caller's.
 *
 * glibc/ELF only (Linux), which is what the TensorFlow wheel runs on.
 */
#ifndef TFCHARGEN_QUIET_H_
#define TFCHARGEN_QUIET_H_

#ifdef __cplusplus
extern "C" {
#endif

/* Gives stderr back (no-op when nothing was redirected). Call it first thing in main(). */
void tfc_restore_stderr(void);

#ifdef __cplusplus
}
#endif

#endif /* TFCHARGEN_QUIET_H_ */
