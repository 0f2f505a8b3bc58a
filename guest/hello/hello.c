/* The smallest command component: prints a line, loads no graph (the process-start bench). */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size);
    if (!p) abort();
    return p;
}

__attribute__((export_name("wasi:cli/run@0.2.0#run")))
int32_t run(void) {
    puts("hello from wasm");
    fflush(stdout);
    return 0;
}
