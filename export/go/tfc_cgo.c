/* The C client's signature reader and start-up quieting, compiled into the Go binary by
 * cgo (cgo builds only the .c files of this directory). */
#include "../c/signature.c"
#include "../c/quiet.c"
