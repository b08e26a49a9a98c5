// A tiny test harness for the host-code unit tests (dev/unit/*.cpp): CHECK counts
// checks and failures; run_in_child runs a function in a forked child and returns
// its exit status and stderr, so that a fatal() path (which exits) can be tested
// for its exit code and its one-line message.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

static int g_checks = 0, g_fail = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        g_checks++;                                                                  \
        if (!(cond)) { g_fail++; printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

struct ChildResult {
    bool exited_nonzero = false;
    int status = 0;
    std::string err;   // everything the child wrote to stderr, without the final newline
};

inline ChildResult run_in_child(const std::function<void()>& fn) {
    int pipefd[2];
    if (pipe(pipefd) != 0) { perror("pipe"); exit(2); }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        fn();
        _exit(0);
    }
    close(pipefd[1]);
    ChildResult r;
    char buf[512];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) r.err.append(buf, n);
    close(pipefd[0]);
    waitpid(pid, &r.status, 0);
    r.exited_nonzero = WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0;
    if (!r.err.empty() && r.err.back() == '\n') r.err.pop_back();
    return r;
}
