/* A "JIT": machine code generated at run time into anonymous executable memory, named in the
 * process's perf map (/tmp/perf-PID.map) as JITs do. The generated function makes a futex
 * wait that times out, so futexscope --stacks captures a stack whose leaf frame is in no file
 * and must be named from the perf map. */
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef long (*futex_fn)(uint32_t *word, long op, long val, struct timespec *timeout);

int main(void) {
    /* mov %rcx,%r10; mov $202,%eax (SYS_futex); syscall; ret */
    static const unsigned char code[] = {0x49, 0x89, 0xca, 0xb8, 0xca, 0x00,
                                         0x00, 0x00, 0x0f, 0x05, 0xc3};
    unsigned char *jit = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (jit == MAP_FAILED)
        return 1;
    memcpy(jit, code, sizeof code);
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map)
        return 1;
    fprintf(map, "%lx %zx jit_futex_wait\n", (unsigned long)jit, sizeof code);
    fclose(map);
    uint32_t word = 0;
    struct timespec timeout = {0, 2000000};
    int timeouts = 0;
    for (int i = 0; i < 20; i++)
        if (((futex_fn)jit)(&word, FUTEX_WAIT_PRIVATE, 0, &timeout) < 0)
            timeouts++;
    printf("jit: %d waits timed out\n", timeouts);
    return 0;
}
