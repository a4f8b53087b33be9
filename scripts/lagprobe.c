/*
 * The task of the scheduling-lag benchmark (examples/load.rs): appends
 * "<seconds>.<microseconds> <CHRONOS_JOB_RUN_TIME>\n" to the file named by its argument, the
 * clock read as its very first act.
 *
 * It is built without libc (x86-64 Linux only) because the lag is measured by the task itself:
 * bash spends a millisecond or more starting up before it can read $EPOCHREALTIME (in a VM,
 * glibc's CPU feature probing alone is slow), and that would be counted as scheduling lag. Here
 * nothing runs between exec and the clock read but a few instructions.
 */
typedef long i64;

static i64 sys(i64 n, i64 a, i64 b, i64 c) {
    i64 r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

struct timespec_raw {
    i64 sec;
    i64 nsec;
};

static int put_number(char *out, i64 value, int width) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (n < width) digits[n++] = '0';
    for (int i = 0; i < n; i++) out[i] = digits[n - 1 - i];
    return n;
}

__attribute__((noreturn, used)) void probe_main(i64 *stack) {
    struct timespec_raw now;
    sys(228 /* clock_gettime */, 0 /* CLOCK_REALTIME */, (i64)&now, 0);
    i64 argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    const char *due = "";
    for (char **entry = envp; *entry; entry++) {
        const char *key = "CHRONOS_JOB_RUN_TIME=";
        const char *text = *entry;
        while (*key && *text == *key) {
            text++;
            key++;
        }
        if (!*key) {
            due = text;
            break;
        }
    }
    char line[96];
    int n = put_number(line, now.sec, 1);
    line[n++] = '.';
    n += put_number(line + n, now.nsec / 1000, 6);
    line[n++] = ' ';
    for (const char *d = due; *d && n < 90; d++) line[n++] = *d;
    line[n++] = '\n';
    if (argc > 1) {
        i64 fd = sys(2 /* open */, (i64)argv[1], 02000 | 01 | 0100 /* O_APPEND|O_WRONLY|O_CREAT */, 0644);
        if (fd >= 0) sys(1 /* write */, fd, (i64)line, n);
    }
    sys(60 /* exit */, 0, 0, 0);
    for (;;) {
    }
}

__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call probe_main\n");
