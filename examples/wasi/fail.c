/*
 * fail: writes one line to stderr and exits with status 3, without reading stdin or writing
 * stdout. Tests that a non-zero exit (proc_exit(3)) becomes a typed error carrying the status,
 * and that stderr is captured apart from stdout.
 */
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    static const char msg[] = "fail: deliberate failure (exit status 3)\n";
    write(2, msg, sizeof msg - 1);
    exit(3);
}
