/* Azure IoT Operations' wasm-graph:processor@1.1.0 types and host services as the
   canonical ABI lays them out, for map operators written in C by hand (there is no C
   bindings generator in the toolchain): the structs below are the ABI's memory layouts,
   checked by the static assertions. For one translation unit per component (it defines
   the exported cabi_realloc). */
#ifndef WASM_GRAPH_H
#define WASM_GRAPH_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint8_t *ptr; uint32_t len; } bytes_t; /* list<u8> and string */
typedef struct { uint8_t tag; union { int32_t handle; bytes_t bytes; } v; } bob_t; /* 0: buffer */
typedef struct { uint64_t secs; uint32_t nanos; } timespec_t;
typedef struct { timespec_t time; uint64_t counter; bob_t node_id; } timestamp_t;
typedef struct { uint8_t some; bob_t v; } option_bos_t;
typedef struct { bob_t key, value; } property_t;
typedef struct { uint8_t tag; union { bob_t reference; struct { bob_t name, content; } inline_; } v; } schema_t;
typedef struct { uint8_t some; schema_t v; } option_schema_t;
typedef struct {
    timestamp_t timestamp; bob_t topic; option_bos_t content_type; bob_t payload;
    struct { property_t *ptr; uint32_t len; } properties; option_schema_t schema;
} message_t;
typedef struct { timestamp_t timestamp; bob_t format; uint32_t width, height; bob_t frame; } snapshot_t;
enum { DM_BUFFER_OR_BYTES, DM_MESSAGE, DM_SNAPSHOT };
typedef struct { uint8_t tag; union { bob_t raw; message_t message; snapshot_t snapshot; } v; } data_model_t;
typedef struct { uint8_t is_err; union { data_model_t ok; bytes_t error; } v; } result_t;
typedef struct { bytes_t key, value; } config_property_t;
typedef struct { bytes_t name, content_type, content; } module_schema_t;

_Static_assert(sizeof(bob_t) == 12 && offsetof(bob_t, v) == 4, "buffer-or-bytes");
_Static_assert(sizeof(timestamp_t) == 40 && offsetof(timestamp_t, node_id) == 24, "timestamp");
_Static_assert(offsetof(message_t, topic) == 40 && offsetof(message_t, content_type) == 52 &&
               offsetof(message_t, payload) == 68 && offsetof(message_t, properties) == 80 &&
               offsetof(message_t, schema) == 88 && sizeof(message_t) == 120, "message");
_Static_assert(offsetof(snapshot_t, format) == 40 && offsetof(snapshot_t, width) == 52 &&
               offsetof(snapshot_t, frame) == 60 && sizeof(snapshot_t) == 72, "snapshot");
_Static_assert(offsetof(data_model_t, v) == 8 && sizeof(data_model_t) == 128, "data-model");
_Static_assert(offsetof(result_t, v) == 8 && sizeof(result_t) == 136, "result");

enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CRITICAL };

#define WG_IMPORT(iface, fn) __attribute__((import_module("wasm-graph:processor/" iface "@1.1.0"), import_name(fn)))
WG_IMPORT("types", "[method]buffer.read") extern void buffer_read(int32_t handle, bytes_t *ret);
WG_IMPORT("types", "[resource-drop]buffer") extern void buffer_drop(int32_t handle);
WG_IMPORT("logger", "log") extern void logger_log(int32_t level, const char *context, uint32_t context_len,
                                                  const char *message, uint32_t message_len);
WG_IMPORT("metrics", "add-to-counter") extern void metrics_add_to_counter(
    const char *name, uint32_t name_len, int32_t value_case, int64_t value, int32_t labels_some,
    const bytes_t *labels, uint32_t labels_len, void *ret);

/* zero-length lists and strings point here: nothing to allocate or free */
static uint8_t empty[8] __attribute__((aligned(8)));

__attribute__((export_name("cabi_realloc")))
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0)
        return empty;
    if (old == NULL && align > 8)
        return aligned_alloc(align, (new_size + align - 1) / align * align);
    void *p = realloc(old == (void *)empty ? NULL : old, new_size);
    if (p == NULL)
        __builtin_trap();
    return p;
}

static inline void release(bytes_t b) {
    if (b.len)
        free(b.ptr);
}

/* the guest's part of a value it was given: its bytes freed, a buffer handle dropped */
static inline void release_bob(bob_t *b) {
    if (b->tag == 0)
        buffer_drop(b->v.handle);
    else
        release(b->v.bytes);
}

/* a buffer's bytes (read from the host) or the bytes themselves; the buffer is kept */
static inline bytes_t peek_bob(const bob_t *b) {
    if (b->tag != 0)
        return b->v.bytes;
    bytes_t out;
    buffer_read(b->v.handle, &out);
    return out;
}

/* the bytes, the value given up: a buffer read and dropped, or the bytes now the caller's */
static inline bytes_t take_bob(bob_t *b) {
    bytes_t out = peek_bob(b);
    if (b->tag == 0)
        buffer_drop(b->v.handle);
    return out;
}

/* the guest memory of a value handed back to the host, freed once the host has copied
   it (its buffer handles are the host's again) */
static inline void free_bob_bytes(bob_t *b) {
    if (b->tag != 0)
        release(b->v.bytes);
}

/* `each` on every buffer-or-bytes/string of a message but its timestamp's */
static inline void each_bob_of_message(message_t *m, void (*each)(bob_t *)) {
    each(&m->topic);
    if (m->content_type.some)
        each(&m->content_type.v);
    each(&m->payload);
    for (uint32_t i = 0; i < m->properties.len; i++) {
        each(&m->properties.ptr[i].key);
        each(&m->properties.ptr[i].value);
    }
    if (m->schema.some) {
        if (m->schema.v.tag == 0) {
            each(&m->schema.v.v.reference);
        } else {
            each(&m->schema.v.v.inline_.name);
            each(&m->schema.v.v.inline_.content);
        }
    }
}

static inline void release_message_except_timestamp(message_t *m) {
    each_bob_of_message(m, release_bob);
    if (m->properties.len)
        free(m->properties.ptr);
}

static inline void log_text(int32_t level, const char *context, const char *text) {
    logger_log(level, context, strlen(context), text, strlen(text));
}

/* the `requests` counter, labelled module=CONTEXT */
static inline void count_request(const char *context) {
    static const char key[] = "module";
    bytes_t label[2] = {{(uint8_t *)key, sizeof key - 1}, {(uint8_t *)context, strlen(context)}};
    struct { uint8_t is_err; struct { uint8_t tag; bytes_t text; } error; } ret;
    metrics_add_to_counter("requests", 8, 0, 1, 1, label, 1, &ret);
    if (ret.is_err)  /* a metric the host refuses does not fail the message, as in Azure's */
        release(ret.error.text);
}

static inline bytes_t copy_text(const char *text) {
    size_t n = strlen(text);
    bytes_t out = {cabi_realloc(NULL, 0, 1, n), (uint32_t)n};
    memcpy(out.ptr, text, n);
    return out;
}

/* init's configuration freed, once init is done with it */
static inline void release_configuration(config_property_t *properties, uint32_t n_properties,
                                         module_schema_t *schemas, uint32_t n_schemas) {
    for (uint32_t i = 0; i < n_properties; i++) {
        release(properties[i].key);
        release(properties[i].value);
    }
    if (n_properties)
        free(properties);
    for (uint32_t i = 0; i < n_schemas; i++) {
        release(schemas[i].name);
        release(schemas[i].content_type);
        release(schemas[i].content);
    }
    if (n_schemas)
        free(schemas);
}

#endif
