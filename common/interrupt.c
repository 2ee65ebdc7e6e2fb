// interrupt.c: see interrupt.h. The handler only touches a sig_atomic_t and calls
// write(2) and _exit(2), which are async-signal-safe.
#include "interrupt.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_count;
static const char *g_msg;
static struct sigaction g_old;
static int g_installed;

static void on_sigint(int sig) {
    (void)sig;
    if (g_count > 0) {
        static const char bye[] = "\ninterrupted again: exiting now\n";
        (void)!write(2, bye, sizeof bye - 1);
        _exit(QL_EXIT_INTERRUPTED);
    }
    g_count = 1;
    if (g_msg) (void)!write(2, g_msg, strlen(g_msg));
}

void intr_install(const char *first_msg) {
    g_msg = first_msg;
    g_count = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // a read or write in progress carries on; the flag is polled
    if (sigaction(SIGINT, &sa, g_installed ? NULL : &g_old) == 0) g_installed = 1;
}

void intr_restore(void) {
    if (g_installed) sigaction(SIGINT, &g_old, NULL);
    g_installed = 0;
    g_count = 0;
}

int intr_requested(void) { return g_count != 0; }

void intr_clear(void) { g_count = 0; }
