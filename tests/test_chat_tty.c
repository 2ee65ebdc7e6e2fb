// test_chat_tty.c: qlora chat at a terminal (a pseudo-terminal driven the way a
// user types, each key sent only once the program waits for it):
//   - line editing: after "hello" and "/reset", Up twice recalls "hello" from the
//     history and Enter sends it, so the answer equals the first one (greedy, fresh
//     conversation); the escape sequence of the Up key never reaches the model;
//   - Ctrl-C at the prompt discards the line typed so far and gives a fresh prompt
//     (nothing is answered), and Ctrl-D on an empty line leaves with status 0.
// Skips (77) when this qlora was built without libedit (chat then reads plain lines).
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "testutil.h"

#define WAIT_MS 120000  // per expected string: generous, for a loaded machine

static char out[1 << 16];  // everything the program wrote to the terminal
static size_t nout;

// Reads from the terminal until s appears after position from; returns the
// position just after it, or -1 on timeout or end of output.
static long expect(int fd, size_t from, const char *s) {
    for (int waited = 0; waited < WAIT_MS;) {
        out[nout] = '\0';
        const char *hit = strstr(out + from, s);
        if (hit) return (long)(hit - out) + (long)strlen(s);
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 100);
        waited += 100;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t n = read(fd, out + nout, sizeof out - 1 - nout);
        if (n <= 0) return -1;
        nout += (size_t)n;
    }
    return -1;
}

// Types s once the line editor reads keys one by one (the terminal out of
// canonical mode: on Linux the master side sees the terminal's modes). Keys sent
// earlier would meet the line discipline in canonical mode instead, as no user
// typing at a prompt does.
static void send_keys(int fd, const char *s) {
    struct termios t;
    for (int waited = 0; waited < WAIT_MS; waited += 10) {
        if (tcgetattr(fd, &t) == 0 && !(t.c_lflag & ICANON)) break;
        usleep(10000);
    }
    CHECK(write(fd, s, strlen(s)) == (ssize_t)strlen(s));
}

// The answer line after position from: the text after "base> " up to the line end.
static char *answer(long from) {
    const char *a = strstr(out + from, "base> ");
    if (!a) return strdup("");
    a += 6;
    size_t n = strcspn(a, "\r\n");
    return strndup(a, n);
}

int main(void) {
#ifndef QLORA_HAVE_LIBEDIT
    fprintf(stderr, "built without libedit: chat has no line editing to test; skipped\n");
    return TEST_SKIP;
#else
    char model[4096];
    snprintf(model, sizeof model, "%s/tests/fixtures/models/tiny_gqa", test_source_dir());
    int fd;
    pid_t pid = forkpty(&fd, NULL, NULL, NULL);
    if (pid == 0) {
        execl(QL_BINARY, "qlora", "chat", "--base", model, "--temperature", "0", "--max-tokens", "8", "--threads", "1",
              (char *)NULL);
        _exit(127);
    }
    CHECK(pid > 0);
    if (pid <= 0) return test_finish("test_chat_tty");
    long p = expect(fd, 0, "you> ");
    CHECKF(p >= 0, "no prompt; the terminal showed:\n%s", out);
    char *a1 = NULL, *a2 = NULL;
    if (p >= 0) {
        send_keys(fd, "hello\r");
        long q = expect(fd, (size_t)p, "you> ");
        CHECKF(q >= 0, "no answer to hello:\n%s", out);
        a1 = answer(p);
        send_keys(fd, "/reset\r");
        p = expect(fd, (size_t)q, "you> ");
        CHECKF(p >= 0 && strstr(out + q, "(conversation cleared)"), "/reset:\n%s", out + (q > 0 ? q : 0));
        long before_up = p;
        send_keys(fd, "\033[A");  // Up: "/reset"
        p = expect(fd, (size_t)before_up, "/reset");
        send_keys(fd, "\033[A");  // Up again: "hello"
        p = p >= 0 ? expect(fd, (size_t)p, "hello") : -1;
        CHECKF(p >= 0, "Up twice did not recall 'hello':\n%s", out + before_up);
        send_keys(fd, "\r");
        q = p >= 0 ? expect(fd, (size_t)p, "you> ") : -1;
        CHECKF(q >= 0, "no answer after the recalled line:\n%s", out + before_up);
        a2 = answer(before_up);
        CHECKF(!strcmp(a1, a2), "the recalled 'hello' answered '%s', the first '%s'", a2, a1);
        CHECKF(!strstr(out, "[A"), "the Up key's escape sequence was echoed or sent:\n%s", out);
        // Ctrl-C discards "abc" and gives a fresh prompt; nothing is answered
        size_t answers = 0;
        for (const char *s = out; (s = strstr(s, "base> ")); s++) answers++;
        send_keys(fd, "abc");
        p = q >= 0 ? expect(fd, (size_t)q, "abc") : -1;  // as typed: the line shows before Ctrl-C
        send_keys(fd, "\003");
        p = p >= 0 ? expect(fd, (size_t)p, "you> ") : -1;
        CHECKF(p >= 0, "no fresh prompt after Ctrl-C:\n%s", out + (q > 0 ? q : 0));
        send_keys(fd, "\004");  // Ctrl-D: leave
        expect(fd, nout, "\n");  // drain what is left
        size_t after = 0;
        for (const char *s = out; (s = strstr(s, "base> ")); s++) after++;
        CHECKF(after == answers, "Ctrl-C: the discarded line was answered:\n%s", out + (q > 0 ? q : 0));
    }
    int status = 0;
    for (int i = 0; i < 600 && waitpid(pid, &status, WNOHANG) == 0; i++) usleep(100000);  // at most 60 s
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECKF(0, "chat did not leave on Ctrl-D");
    } else {
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "chat left with status 0x%x", status);
    }
    fprintf(stderr, "chat at a terminal: answer '%s' twice (typed, then recalled with Up); Ctrl-C discarded a line\n",
            a1 ? a1 : "");
    free(a1), free(a2);
    close(fd);
    return test_finish("test_chat_tty");
#endif
}
