// test_progress.c: the progress line fits the terminal. progress_bar writes to
// stderr, here a pseudo-terminal of 20, 40, 80 and 200 columns; every line it
// draws (between carriage returns, without the erase-to-end sequence) is at most
// one column short of the width, so it never wraps and scrolls; at 80 columns
// the metrics, a bar and the ETA are there, at 200 the counts too.
#include <poll.h>
#include <pty.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/log.h"
#include "testutil.h"

static void check_width(int cols, const char *what) {
    int master, slave;
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
    CHECK(openpty(&master, &slave, NULL, NULL, &ws) == 0);
    int saved = dup(2);
    dup2(slave, 2);
    double t0 = time_now();
    for (int i = 0; i <= 4; i++) progress_bar(what, i * 250, 1000, "steps", t0);
    dup2(saved, 2);
    close(saved), close(slave);
    char buf[8192];
    ssize_t n = 0;
    for (;;) {  // all of it: a read may return part
        struct pollfd p = {master, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) break;
        ssize_t r = read(master, buf + n, sizeof buf - 1 - (size_t)n);
        if (r <= 0) break;
        n += r;
    }
    close(master);
    CHECK(n > 0);
    if (n <= 0) return;
    buf[n] = 0;
    int lines = 0;
    for (char *l = strtok(buf, "\r\n"); l; l = strtok(NULL, "\r\n")) {
        char *esc = strstr(l, "\033[K");
        if (esc) *esc = 0;
        int w = (int)strlen(l);
        CHECKF(w <= cols - 1, "%d columns: a line of %d: '%s'", cols, w, l);
        if (cols >= 80) CHECKF(strstr(l, " [") && strstr(l, "]") && strstr(l, "ETA") && strstr(l, "tok/s"), "%d columns: '%s'", cols, l);
        if (cols >= 200) CHECKF(strstr(l, "/1000 steps"), "%d columns: '%s'", cols, l);
        lines++;
    }
    CHECKF(lines == 5, "%d columns: %d lines drawn, expected 5", cols, lines);
}

int main(void) {
    const char *what = "step 120/1000 loss 1.8431 lr 2.00e-04 512 tok/s";
    int widths[] = {20, 40, 80, 200};
    for (int i = 0; i < 4; i++) check_width(widths[i], what);
    check_width(40, "");
    return test_finish("test_progress");
}
