/* A stand-in for botserver/botui: answers GET /health with {"status":"ok",...,"commit":COMMIT}.
 *
 * Built by gbdeploy_sandbox.service with the commit compiled in (-DGB_COMMIT), so the binary's
 * bytes contain it as botserver's do. By default it sets no signal disposition at all, as a Rust
 * program without a handler: a SIGTERM ends it at once, and a SIGTERM the process inherited as
 * ignored (see FACTS.md) keeps it running until SIGKILL. It writes with MSG_NOSIGNAL, so it needs
 * no SIGPIPE setting either: /proc/PID/status SigIgn shows only what its starter left ignored.
 * Variants for tests:
 *   -DGB_FAIL_AT_START   exits 1 at once, as a binary that cannot start
 *   -DGB_NEVER_HEALTHY   listens but answers 503 {"status":"degraded"}
 *   -DGB_IGNORE_TERM     ignores SIGTERM, so only SIGKILL stops it
 *   -DGB_TERM_HANDLER    installs its own SIGTERM handler (exits 0), which resets an inherited ignore
 *   -DGB_SLOW_START      listens only after 0.3 s, as a service that loads before it serves
 *   -DGB_DIE_AFTER_MS=N  serves, then exits 1 after N ms, as a binary that crashes once running
 *   -DGB_FLAPPING        its health answers ok, then 503, in turn
 * With GB_ON_TERM in its environment (a variant a test asks for at run time), it installs a SIGTERM
 * handler that runs that shell command (a slow shutdown, or a test's hook into the moment of the
 * stop), then prints `graceful exit` and exits 0.
 * Listens on 127.0.0.1:$PORT (default 5858). Extra arguments (e.g. --noconsole) are ignored.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef GB_COMMIT
#define GB_COMMIT "0000000"
#endif
#ifndef GB_SERVICE
#define GB_SERVICE "botserver"
#endif

static const char commit_marker[] = "gbdeploy-standin-commit=" GB_COMMIT;

#ifdef GB_TERM_HANDLER
static void exit_at_once(int sig) {
    (void)sig;
    _exit(0);
}
#endif

static const char *on_term_hook;
static volatile sig_atomic_t term_requested;

static void on_term(int sig) {
    (void)sig;
    term_requested = 1; /* handled in the main loop: accept() returns EINTR */
}

static void exit_gracefully(void) {
    if (system(on_term_hook) == -1) perror(GB_SERVICE ": GB_ON_TERM");
    printf("%s stand-in %s: graceful exit after SIGTERM\n", GB_SERVICE, commit_marker);
    fflush(stdout);
    _exit(0);
}

#ifdef GB_DIE_AFTER_MS
static void on_alarm(int sig) {
    (void)sig;
    static const char text[] = GB_SERVICE ": fatal: crashed after start (stand-in built to)\n";
    (void)!write(2, text, sizeof text - 1);
    _exit(1);
}
#endif

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
#ifdef GB_FAIL_AT_START
    fprintf(stderr, "%s: fatal: cannot start (stand-in built to fail)\n", GB_SERVICE);
    return 1;
#endif
#ifdef GB_IGNORE_TERM
    signal(SIGTERM, SIG_IGN);
#endif
#ifdef GB_TERM_HANDLER
    signal(SIGTERM, exit_at_once);
#endif
#ifndef GB_IGNORE_TERM
    on_term_hook = getenv("GB_ON_TERM");
    if (on_term_hook) {
        struct sigaction term = {0};
        term.sa_handler = on_term; /* no SA_RESTART: a blocked accept() returns to the loop */
        sigaction(SIGTERM, &term, NULL);
    }
#endif
#ifdef GB_DIE_AFTER_MS
    signal(SIGALRM, on_alarm);
    struct itimerval timer = {{0, 0}, {GB_DIE_AFTER_MS / 1000, (GB_DIE_AFTER_MS % 1000) * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
#endif
#ifdef GB_SLOW_START
    usleep(300000);
#endif
    const char *port_text = getenv("PORT");
    int port = port_text ? atoi(port_text) : 5858;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(server, (struct sockaddr *)&address, sizeof address) != 0 || listen(server, 64) != 0) {
        perror(GB_SERVICE ": listen");
        return 1;
    }
    printf("%s stand-in %s listening on 127.0.0.1:%d\n", GB_SERVICE, commit_marker, port);
    fflush(stdout);
    char request[2048];
    char response[512];
    unsigned long health_requests = 0;
    for (;;) {
        if (term_requested) exit_gracefully();
        int client = accept(server, NULL, NULL);
        if (client < 0) continue;
        /* Read the whole request head: a client may send it in several writes (bash's
         * /dev/tcp with a line-buffered printf does), and closing early would reset it. */
        size_t used = 0;
        request[0] = '\0';
        while (used < sizeof request - 1 && strstr(request, "\r\n\r\n") == NULL) {
            ssize_t got = read(client, request + used, sizeof request - 1 - used);
            if (got <= 0) break;
            used += (size_t)got;
            request[used] = '\0';
        }
        const char *body;
        const char *status;
        if (strncmp(request, "GET /health ", 12) == 0 || strncmp(request, "GET /api/health ", 16) == 0) {
#ifdef GB_FLAPPING
            int flap = health_requests++ % 2 == 1;
#else
            int flap = 0;
#endif
#ifdef GB_NEVER_HEALTHY
            flap = 1;
#endif
            if (flap) {
                status = "503 Service Unavailable";
                body = "{\"status\":\"degraded\",\"service\":\"" GB_SERVICE "\",\"commit\":\"" GB_COMMIT "\"}";
            } else {
                status = "200 OK";
                body = "{\"status\":\"ok\",\"service\":\"" GB_SERVICE "\",\"version\":\"0.0.0-standin\",\"commit\":\"" GB_COMMIT "\"}";
            }
        } else {
            status = "404 Not Found";
            body = "{\"error\":\"not found\"}";
        }
        int length = snprintf(response, sizeof response,
                              "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                              "Connection: close\r\n\r\n%s",
                              status, strlen(body), body);
        (void)!send(client, response, (size_t)length, MSG_NOSIGNAL);
        close(client);
    }
}
