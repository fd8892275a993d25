#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static int tickets;

#define KEEP() __asm__ volatile("" ::: "memory")

__attribute__((noinline)) int wait_level_three(void) {
    pthread_mutex_lock(&lock);
    while (tickets == 0)
        pthread_cond_wait(&ready, &lock);
    tickets--;
    pthread_mutex_unlock(&lock);
    KEEP();
    return 1;
}
__attribute__((noinline)) int wait_level_two(void) { int r = wait_level_three(); KEEP(); return r + 1; }
__attribute__((noinline)) int wait_level_one(void) { int r = wait_level_two(); KEEP(); return r + 1; }

static void *waiter(void *arg) {
    int rounds = *(int *)arg;
    for (int i = 0; i < rounds; i++) wait_level_one();
    return NULL;
}

static void give(void) {
    pthread_mutex_lock(&lock);
    tickets++;
    pthread_cond_signal(&ready);
    pthread_mutex_unlock(&lock);
}
__attribute__((noinline)) void signal_from_alpha(void) { give(); KEEP(); }
__attribute__((noinline)) void signal_from_beta(void) { give(); KEEP(); }

int main(int argc, char **argv) {
    int rounds = 20, threads = 2;
    pthread_t tids[2];
    for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, waiter, &rounds);
    for (int i = 0; i < rounds * threads; i++) {
        usleep(2000);
        if (i % 2) signal_from_beta(); else signal_from_alpha();
    }
    for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
    printf("done\n");
    return 0;
}
