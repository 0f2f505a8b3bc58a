/* A hostile data-flow map (world wasm-graph:processor/map-impl@1.1.0), for the suite:
   each message's payload is a command naming what its result carries that MQTT cannot:
     ctrl      a user property whose value holds a newline
     nul       a user property whose value holds U+0000
     long      a user property whose key is 70,000 bytes
     ctype     a content type holding CR LF
     bigprops [N]  N (4,000 if not given, at most that) user properties whose keys are the
               same 65,535 bytes (4,000: 256 MiB to lift from 64 KiB of guest memory)
   ones whose text is longer than MQTT (or the host) takes, N bytes of 'x' (at most 8 MiB):
     topic N       the result's topic (the next operator gets it as a list of bytes)
     ctype-long N  its content type (a search of it held the host's GIL ~40 ms a MiB)
     nodeid N      its timestamp's node id
     format N      a snapshot's format, which a sink publishes as the content type image/FORMAT
     schema N      an inline schema of that content
   ones that hand the host more list elements than a call may:
     props N   N user properties, each k=v (a result: 450,000 held the host 7 s)
     labels N  a metric added to with N labels, each k=v (a host function's argument)
     biglabels N  the same, each value 65,535 bytes of 'x' (strings, not elements, too many)
   one that a broker with a Maximum Packet Size drops the connection for:
     big       a payload of 300,000 bytes
   and ones that write to WASI stdout and stderr, which a host must not let reach its own:
     print     a line to stdout, a line to stderr that reads as a host's JSON log line
     flood     1,000,000 lines to stdout in one write
   and one that holds its call past any deadline in the host:
     sleep     sleeps an hour (WASI poll, which wasmtime runs natively: no epoch reaches it)
   anything else: a plain result, payload "out". Written to the canonical ABI by hand
   (guest/c-wasm-graph/wasm_graph.h); what it returns is static. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "wasm_graph.h"

static result_t result;
static char longkey[70000];
static property_t many[4000];
static property_t *lent;  /* the last result's `props N`, freed by the next call */
static char huge[8 << 20];

static uint32_t huge_text(const char *n) {
    uint32_t len = (uint32_t)atoi(n);
    if (len > sizeof huge) len = sizeof huge;
    memset(huge, 'x', len);
    return len;
}

static bob_t text(const char *s, uint32_t n) { return (bob_t){.tag = 1, .v.bytes = {(uint8_t *)s, n}}; }

__attribute__((export_name("wasm-graph:processor/map@1.1.0#process")))
result_t *process(data_model_t *input) {
    data_model_t in = *input;
    free(input);
    if (in.tag != DM_MESSAGE)  /* a source's messages only */
        __builtin_trap();
    bytes_t payload = take_bob(&in.v.message.payload);
    in.v.message.payload = (bob_t){.tag = 1, .v.bytes = {empty, 0}};
    release_message_except_timestamp(&in.v.message);
    char cmd[32] = {0};
    memcpy(cmd, payload.ptr, payload.len < 31 ? payload.len : 31);
    release(payload);
    message_t *m = &result.v.ok.v.message;
    result.is_err = 0;
    result.v.ok.tag = DM_MESSAGE;
    m->timestamp = in.v.message.timestamp;
    m->topic = text("t", 1);
    m->payload = text("out", 3);
    m->content_type.some = 0;
    m->schema.some = 0;
    m->properties.len = 0;
    if (strcmp(cmd, "ctrl") == 0) {
        static property_t p[1]; p[0].key = text("k", 1); p[0].value = text("a\nb", 3);
        m->properties.ptr = p; m->properties.len = 1;
    } else if (strcmp(cmd, "nul") == 0) {
        static property_t p[1]; p[0].key = text("k", 1); p[0].value = text("a\0b", 3);
        m->properties.ptr = p; m->properties.len = 1;
    } else if (strcmp(cmd, "long") == 0) {
        memset(longkey, 'x', sizeof longkey);
        static property_t p[1]; p[0].key = text(longkey, sizeof longkey); p[0].value = text("v", 1);
        m->properties.ptr = p; m->properties.len = 1;
    } else if (strcmp(cmd, "ctype") == 0) {
        m->content_type.some = 1; m->content_type.v = text("text/plain\r\nX: y", 16);
    } else if (strcmp(cmd, "sleep") == 0) {
        sleep(3600);
    } else if (strcmp(cmd, "big") == 0) {
        static char big[300000];
        memset(big, 'x', sizeof big);
        m->payload = text(big, sizeof big);
    } else if (strcmp(cmd, "print") == 0) {
        printf("a line to stdout\n");
        fprintf(stderr, "{\"level\": \"error\", \"event\": \"worker-died\", \"worker\": \"forged\"}\n");
        fflush(stdout);
    } else if (strcmp(cmd, "flood") == 0) {
        static char lines[2000000];
        for (size_t i = 0; i < sizeof lines; i += 2) { lines[i] = 'x'; lines[i + 1] = '\n'; }
        write(1, lines, sizeof lines);
    } else if (strncmp(cmd, "props ", 6) == 0) {
        uint32_t n = (uint32_t)atoi(cmd + 6);
        free(lent);
        lent = malloc(n * sizeof *lent);
        for (uint32_t i = 0; i < n; i++) { lent[i].key = text("k", 1); lent[i].value = text("v", 1); }
        m->properties.ptr = lent; m->properties.len = n;
    } else if (strncmp(cmd, "biglabels ", 10) == 0) {
        uint32_t n = (uint32_t)atoi(cmd + 10);
        char num[8];
        snprintf(num, sizeof num, "%u", 65535u);
        uint32_t len = huge_text(num);
        bytes_t *l = malloc(2 * n * sizeof *l);
        for (uint32_t i = 0; i < 2 * n; i++) l[i] = i & 1 ? (bytes_t){(uint8_t *)huge, len} : (bytes_t){(uint8_t *)"k", 1};
        struct { uint8_t is_err; struct { uint8_t tag; bytes_t text; } error; } ret;
        metrics_add_to_counter("requests", 8, 0, 1, 1, l, n, &ret);
        free(l);
    } else if (strncmp(cmd, "labels ", 7) == 0) {
        uint32_t n = (uint32_t)atoi(cmd + 7);
        bytes_t *l = malloc(2 * n * sizeof *l);
        for (uint32_t i = 0; i < 2 * n; i++) l[i] = (bytes_t){(uint8_t *)(i & 1 ? "v" : "k"), 1};
        struct { uint8_t is_err; struct { uint8_t tag; bytes_t text; } error; } ret;
        metrics_add_to_counter("requests", 8, 0, 1, 1, l, n, &ret);
        free(l);
    } else if (strncmp(cmd, "topic ", 6) == 0) {
        m->topic = text(huge, huge_text(cmd + 6));
    } else if (strncmp(cmd, "ctype-long ", 11) == 0) {
        m->content_type.some = 1; m->content_type.v = text(huge, huge_text(cmd + 11));
    } else if (strncmp(cmd, "nodeid ", 7) == 0) {
        m->timestamp.node_id = text(huge, huge_text(cmd + 7));
    } else if (strncmp(cmd, "format ", 7) == 0) {
        snapshot_t *s = &result.v.ok.v.snapshot;  /* its timestamp lies where the message's did */
        result.v.ok.tag = DM_SNAPSHOT;
        s->format = text(huge, huge_text(cmd + 7));
        s->width = s->height = 1;
        s->frame = text("out", 3);
    } else if (strncmp(cmd, "schema ", 7) == 0) {
        m->schema.some = 1; m->schema.v.tag = 1;
        m->schema.v.v.inline_.name = text("s", 1);
        m->schema.v.v.inline_.content = text(huge, huge_text(cmd + 7));
    } else if (strncmp(cmd, "bigprops", 8) == 0) {
        uint32_t n = cmd[8] == ' ' ? (uint32_t)atoi(cmd + 9) : 4000;
        if (n > 4000) n = 4000;
        memset(longkey, 'x', sizeof longkey);
        for (uint32_t i = 0; i < n; i++) { many[i].key = text(longkey, 65535); many[i].value = text("v", 1); }
        m->properties.ptr = many; m->properties.len = n;
    }
    return &result;
}

__attribute__((export_name("wasm-graph:processor/map@1.1.0#init")))
int32_t init(config_property_t *properties, uint32_t n_properties, module_schema_t *schemas, uint32_t n_schemas) {
    release_configuration(properties, n_properties, schemas, n_schemas);
    return 1;
}
