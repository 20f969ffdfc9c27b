/* A C host must survive agents that die. omk_team_run on the scripted agent
 * ($OMK_KIMI_BIN, set by run.sh) with process-level faults
 * (OMK_SCRIPTED_FAULT, see omk-scripted-agent/src/fault.rs): every run must
 * return OK with a Failed team whose task has errors naming the fault,
 * failure.json in its state_dir, and no agent process left behind.
 *
 * This process keeps SIGPIPE's default action (terminate) and leaves it
 * unblocked on its own thread, as a C host does: a write to a dead agent on
 * the calling thread kills it (the SIGPIPE defect; before the fix 6 of 8
 * early-exit runs killed the host, which run.sh reports as exit status 141).
 * The early-exit faults are therefore repeated 20 times each.
 *
 * run.sh runs this program without valgrind (40+ team runs with agent
 * processes are slow under valgrind, and valgrind changes the timing of the
 * races); OMK_FAULTS_VALGRIND=1 runs it under valgrind as well. */
#include "omk_test.h"

#include <dirent.h>
#include <signal.h>
#include <time.h>

#define REPEATS 20

/* The contents of PATH (malloc'd, NUL-terminated, any size), or NULL. */
static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    if (f == NULL) return NULL;
    do {
        if (cap - len < 65536) {
            char *grown = realloc(buf, cap + 65536 + 1);
            if (grown == NULL) break;
            buf = grown;
            cap += 65536;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    if (buf != NULL) buf[len] = '\0';
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* The string value of the first "KEY": "..." in DOC (no escapes expected),
 * copied to BUF; 0 on success. */
static int json_str(const char *doc, const char *key, char *buf, size_t size) {
    char pattern[128];
    const char *p, *end;
    snprintf(pattern, sizeof pattern, "\"%s\": \"", key);
    p = doc != NULL ? strstr(doc, pattern) : NULL;
    if (p == NULL) return -1;
    p += strlen(pattern);
    end = strchr(p, '"');
    if (end == NULL || (size_t)(end - p) >= size) return -1;
    memcpy(buf, p, (size_t)(end - p));
    buf[end - p] = '\0';
    return 0;
}

/* DOC has a task whose "errors" array is not empty. */
static int has_task_errors(const char *doc) {
    const char *p = doc != NULL ? strstr(doc, "\"tasks\"") : NULL;
    while (p != NULL && (p = strstr(p, "\"errors\": [")) != NULL) {
        p += strlen("\"errors\": [");
        while (*p == ' ' || *p == '\n') p++;
        if (*p == '"') return 1;
    }
    return 0;
}

/* A process is gone: kill(pid, 0) fails with ESRCH (reaped, not a zombie). */
static int gone(long pid) {
    return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

/* Children of this process that still exist (zombies included), written to
 * PIDS (up to MAX); returns how many. */
static int children(long *pids, int max) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int count = 0;
    long me = (long)getpid();
    if (d == NULL) return 0;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[1024];
        const char *close_paren;
        FILE *f;
        size_t n;
        long ppid = 0;
        char state = '?';
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        f = fopen(path, "r");
        if (f == NULL) continue;
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        close_paren = strrchr(buf, ')');
        if (close_paren == NULL || sscanf(close_paren + 1, " %c %ld", &state, &ppid) != 2)
            continue;
        if (ppid == me) {
            if (count < max) pids[count] = atol(e->d_name);
            count++;
        }
    }
    closedir(d);
    return count;
}

/* Every agent the team started (worker_started's agent_pid in events.jsonl)
 * is gone, and no child process of ours is left, within 2 s. */
static void check_agents_gone(const char *case_name, const char *state_dir) {
    char path[8192];
    char *events;
    const char *p;
    long pids[64];
    int npids = 0, i, left;
    double deadline = now_s() + 2.0;

    snprintf(path, sizeof path, "%s/events.jsonl", state_dir);
    events = read_all(path);
    CHECK(events != NULL);
    for (p = events; p != NULL && (p = strstr(p, "\"worker_started\"")) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        const char *pid = strstr(p, "\"agent_pid\":");
        if (pid != NULL && (eol == NULL || pid < eol) && npids < 64)
            pids[npids++] = atol(pid + strlen("\"agent_pid\":"));
    }
    free(events);
    for (i = 0; i < npids; i++) {
        while (!gone(pids[i]) && now_s() < deadline) sleep_ms(20);
        if (!gone(pids[i]))
            fprintf(stderr, "%s: agent %ld is still there\n", case_name, pids[i]);
        CHECK(pids[i] > 0 && gone(pids[i]));
    }
    {
        long kids[16];
        while ((left = children(kids, 16)) > 0 && now_s() < deadline) sleep_ms(20);
        for (i = 0; i < left && i < 16; i++)
            fprintf(stderr, "%s: child process %ld is still there\n", case_name, kids[i]);
        CHECK(left == 0);
    }
}

static int runs = 0;

/* One team run with FAULT (NULL: none) and TASK; it must fail with EXPECT in
 * the task's errors and in failure.json. Returns 0 when every check passed. */
static int run_case(omk_t *h, const char *fault, const char *task, const char *expect) {
    int failed_before = t_failed;
    char name[128], options[1024], state_dir[4096], path[8192];
    char *out = NULL;
    char *failure;
    double started = now_s();

    snprintf(name, sizeof name, "f%d-%s", runs++, fault != NULL ? fault : "none");
    /* "garbage:300000" -> "garbage-300000": a team name has no ':'. */
    {
        char *c;
        for (c = name; *c; c++)
            if (*c == ':') *c = '-';
    }
    if (fault != NULL)
        setenv("OMK_SCRIPTED_FAULT", fault, 1);
    else
        unsetenv("OMK_SCRIPTED_FAULT");
    /* One subtask given: no planner turn, so every agent is the worker's. */
    snprintf(options, sizeof options, "{\"name\": \"%s\", \"subtasks\": [\"%s\"]}", name,
             task);
    CHECK_OK(omk_team_run(h, "1:executor", task, options, &out));
    unsetenv("OMK_SCRIPTED_FAULT");

    CHECK_HAS(out, "\"phase\": \"Failed\"");
    CHECK(has_task_errors(out));
    CHECK_HAS(out, expect);
    CHECK(json_str(out, "state_dir", state_dir, sizeof state_dir) == 0);
    snprintf(path, sizeof path, "%s/failure.json", state_dir);
    failure = read_all(path);
    CHECK(failure != NULL);
    CHECK_HAS(failure, "Failed");
    CHECK_HAS(failure, expect);
    free(failure);
    check_agents_gone(name, state_dir);
    omk_string_free(out);
    if (t_failed != failed_before)
        fprintf(stderr, "case %s (task %s) failed\n", name, task);
    else
        printf("ok: %-28s %5.1f s\n", name, now_s() - started);
    fflush(stdout);
    return t_failed != failed_before;
}

int main(void) {
    const char *agent = getenv("OMK_KIMI_BIN");
    char *dir = t_mkdtemp("faults");
    char state[4096], project[4096], path[8192];
    struct sigaction sa;
    sigset_t set;
    omk_t *h;
    int i, bad;

    CHECK(agent != NULL && access(agent, X_OK) == 0);
    if (agent == NULL) {
        fprintf(stderr, "set OMK_KIMI_BIN to target/debug/omk-scripted-agent\n");
        return t_finish();
    }

    /* A C host as it comes: SIGPIPE terminates and is not blocked (even if
     * whoever started us ignored or blocked it). */
    signal(SIGPIPE, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    CHECK(sigprocmask(SIG_UNBLOCK, &set, NULL) == 0);

    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(project, sizeof project, "%s/project", dir);
    CHECK(mkdir(project, 0700) == 0);
    snprintf(path, sizeof path, "%s/.omk", project);
    CHECK(mkdir(path, 0700) == 0);
    /* Short leases and one attempt, so every fault ends in seconds. */
    snprintf(path, sizeof path, "%s/.omk/config.toml", project);
    CHECK(t_write_file(path, "[team]\nlease_secs = 2\nstop_grace_secs = 1\nmax_attempts = 1\n"
                             "retry_backoff_ms = 50\nheartbeat_secs = 1\n") == 0);
    h = t_open(state, project);

    /* The SIGPIPE races: agents that exit before reading their input. */
    for (bad = 0, i = 0; i < REPEATS; i++)
        bad += run_case(h, "exit-at-once", "hello", "agent failed to start");
    CHECK(bad == 0);
    for (bad = 0, i = 0; i < REPEATS; i++)
        bad += run_case(h, "exit-after-line", "hello", "agent failed to start");
    CHECK(bad == 0);

    run_case(h, "die-after-initialize", "hello", "exited with code 3 during prompt");
    run_case(h, NULL, "hello [crash]", "exited with code 3 during prompt");
    run_case(h, "garbage:300000", "hello", "exited with code 3");
    run_case(h, "huge-line:209715200", "hello", "longer than the 16 MiB cap");
    run_case(h, "close-stdout", "hello", "closed its output");
    {
        /* Ignores SIGTERM and stdin EOF: killed when its 2 s lease expires. */
        double started = now_s(), took;
        run_case(h, "ignore-term", "hello [stall]", "lease expired");
        took = now_s() - started;
        CHECK(took >= 2.0);
        CHECK(took < 15.0);
    }

    /* Still alive (we got here), and omk left the host's SIGPIPE alone. */
    CHECK(sigaction(SIGPIPE, NULL, &sa) == 0);
    CHECK(sa.sa_handler == SIG_DFL);
    CHECK(sigprocmask(SIG_BLOCK, NULL, &set) == 0);
    CHECK(!sigismember(&set, SIGPIPE));

    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
