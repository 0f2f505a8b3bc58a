/* A command component that sleeps through WASI, for the tests of deadlines that reach
   into wasmtime's native poll (abi/clocks.py). Its environment's SLEEP says how:
     for      sleep(3600): a relative subscription (subscribe-duration); the default
     until    clock_nanosleep to an hour from now on the monotonic clock, TIMER_ABSTIME
              (subscribe-instant)
     short    usleep(200 ms), then exit status 0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size);
    if (!p) abort();
    return p;
}

__attribute__((export_name("wasi:cli/run@0.2.0#run")))
int32_t run(void) {
    const char *how = getenv("SLEEP");
    if (how != NULL && strcmp(how, "short") == 0)
        return usleep(200000) == 0 ? 0 : 1;
    if (how != NULL && strcmp(how, "until") == 0) {
        struct timespec at;
        clock_gettime(CLOCK_MONOTONIC, &at);
        at.tv_sec += 3600;
        return clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == 0 ? 0 : 1;
    }
    return sleep(3600) == 0 ? 0 : 1;
}
