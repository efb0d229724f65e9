/* quiet.c: see quiet.h. */
#define _GNU_SOURCE
#include "quiet.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEVEL_VAR "TF_CPP_MIN_LOG_LEVEL"

extern char **environ;

static int quiet;             /* set before any library initializer runs, then read-only */
static int saved_stderr = -1; /* the caller's stderr while fd 2 is on /dev/null */

/* Interposes glibc's getenv for the whole process (executable symbols come first in the
 * dynamic linker's lookup). Same semantics as glibc's: a read-only scan of environ. */
char *getenv(const char *name) {
  if (quiet && strcmp(name, LEVEL_VAR) == 0) return (char *)"3";
  size_t n = strlen(name);
  if (n == 0 || strchr(name, '=')) return NULL;
  for (char **e = environ; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

/* Runs before libc and TensorFlow are initialized: only envp and thin syscall wrappers. */
static void quiet_preinit(int argc, char **argv, char **envp) {
  (void)argc;
  (void)argv;
  for (char **e = envp; e && *e; e++)
    if (strncmp(*e, LEVEL_VAR "=", sizeof LEVEL_VAR) == 0) return; /* the caller chose */
  quiet = 1;
  int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (devnull < 0) return;
  saved_stderr = fcntl(2, F_DUPFD_CLOEXEC, 3);
  if (saved_stderr >= 0) dup2(devnull, 2);
  close(devnull);
}

__attribute__((section(".preinit_array"), used)) static void (*const quiet_preinit_entry)(
    int, char **, char **) = quiet_preinit;

void tfc_restore_stderr(void) {
  if (saved_stderr < 0) return;
  dup2(saved_stderr, 2);
  close(saved_stderr);
  saved_stderr = -1;
}
