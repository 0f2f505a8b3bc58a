/* Azure IoT Operations' snapshot module's map, in C (world wasinn:guest/snapshot-map:
   Azure's map-impl world and wasi:nn), as Azure's is compiled Rust: guest/snapshot's map
   (Python, componentize-py) without an interpreter, the same behaviour and bytes.

   A raw 224x224 RGB frame in Azure's `.raw` layout (150,528 bytes, interleaved, row by
   row), as a snapshot's frame or a message's payload, is classified through wasi:nn by
   EfficientNet-Lite0 built into the operator (`graph.load` of the embedded ONNX model,
   once, at init; wasinn's composed model: uint8 HWC `image` in, softmax `ranked` out)
   into JSON that replaces the frame (or payload):

       {"object":{"result":"laptop","top5":[{"label":"laptop","index":620,"score":0.83},...]}}

   byte for byte what guest/snapshot writes (json.dumps with compact separators of the
   labels, indices and round(score, 6)). The frame the host hands over as a buffer is read
   once into this memory and passed from there to the tensor constructor; nothing else is
   copied per frame. Each call counts `requests` (module=module-snapshot/map).

   The model and labels.txt are built in with the assembler's .incbin from the directory
   SNAPSHOT_DATA names at compile time (-DSNAPSHOT_DATA=DIR, DIR holding model.onnx and
   labels.txt); pipelines/README.md says how to build it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"
#include "wasm_graph.h"

#define SIDE 224
#define FRAME_BYTES (SIDE * SIDE * 3)
#define TOP 5
#define CONTEXT "module-snapshot/map"

#ifndef SNAPSHOT_DATA
#error "build with -DSNAPSHOT_DATA=DIR, DIR holding model.onnx and labels.txt"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)
#define EMBED(sym, file)                                                                   \
    __asm__(".section .rodata." #sym ",\"\",@\n.p2align 3\n" #sym ":\n.incbin \"" STR(SNAPSHOT_DATA) \
            "/" file "\"\n" #sym "_end:\n.size " #sym ", " #sym "_end - " #sym "\n");        \
    extern const uint8_t sym[], sym##_end[];
EMBED(model_onnx, "model.onnx")
EMBED(labels_txt, "labels.txt")

static nn_handle context = -1;
/* each class's label, already a JSON string (quoted and escaped as json.dumps does) */
static bytes_t *labels;
static uint32_t n_labels;
/* the result's JSON, written here each frame (its size bounded by the longest label) */
static char *json;

/* --- labels.txt: lines as Python's str.splitlines() cuts them, WordNet ids dropped --- */

/* the length of the line break at p (0: none): \n \r \r\n \v \f \x1c-\x1e, U+0085,
   U+2028, U+2029 */
static uint32_t line_break(const uint8_t *p, const uint8_t *end) {
    if (*p == '\r')
        return p + 1 < end && p[1] == '\n' ? 2 : 1;
    if (*p == '\n' || *p == '\v' || *p == '\f' || (*p >= 0x1c && *p <= 0x1e))
        return 1;
    if (*p == 0xC2 && p + 1 < end && p[1] == 0x85)
        return 2;
    if (*p == 0xE2 && p + 2 < end && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
        return 3;
    return 0;
}

/* guest/snapshot's _label: what follows the WordNet id of a synset line
   (`n02133161 American black bear, ...`), else the line */
static bytes_t label_of(const uint8_t *line, uint32_t n) {
    const uint8_t *space = memchr(line, ' ', n);
    if (space == NULL || space - line != 9 || line[0] != 'n' || space + 1 == line + n)
        return (bytes_t){(uint8_t *)line, n};
    for (int i = 1; i < 9; i++)
        if (line[i] < '0' || line[i] > '9')
            return (bytes_t){(uint8_t *)line, n};
    return (bytes_t){(uint8_t *)space + 1, n - 10};
}

/* one code point of UTF-8 at p (its length in *len); U+FFFD for a malformed one */
static uint32_t utf8_next(const uint8_t *p, const uint8_t *end, uint32_t *len) {
    uint32_t n = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC0 ? 2 : 1;
    if (n == 1 || p + n > end) {
        *len = 1;
        return *p < 0x80 ? *p : 0xFFFD;
    }
    uint32_t cp = *p & (0x7F >> n);
    for (uint32_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *len = 1;
            return 0xFFFD;
        }
        cp = cp << 6 | (p[i] & 0x3F);
    }
    *len = n;
    return cp;
}

/* text as json.dumps writes a str (ensure_ascii: only ' '..'~' as they are) */
static bytes_t json_string(bytes_t text) {
    uint8_t *out = malloc(text.len * 12 + 2), *o = out;
    const uint8_t *p = text.ptr, *end = text.ptr + text.len;
    *o++ = '"';
    while (p < end) {
        uint32_t n, cp = utf8_next(p, end, &n);
        p += n;
        const char *short_escape = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\n' ? "\\n" : cp == '\r' ? "\\r"
                                   : cp == '\t' ? "\\t" : cp == '\b' ? "\\b" : cp == '\f' ? "\\f" : NULL;
        if (short_escape != NULL) {
            memcpy(o, short_escape, 2);
            o += 2;
        } else if (cp >= ' ' && cp <= '~') {
            *o++ = (uint8_t)cp;
        } else if (cp < 0x10000) {
            o += sprintf((char *)o, "\\u%04x", (unsigned)cp);
        } else {
            cp -= 0x10000;
            o += sprintf((char *)o, "\\u%04x\\u%04x", (unsigned)(0xD800 | cp >> 10), (unsigned)(0xDC00 | (cp & 0x3FF)));
        }
    }
    *o++ = '"';
    return (bytes_t){out, (uint32_t)(o - out)};
}

static void read_labels(void) {
    const uint8_t *p = labels_txt, *end = labels_txt_end;
    uint32_t cap = 1024, longest = 0;
    labels = malloc(cap * sizeof *labels);
    while (p < end) {
        const uint8_t *line = p;
        uint32_t brk = 0;
        while (p < end && (brk = line_break(p, end)) == 0)
            p++;
        if (n_labels == cap)
            labels = realloc(labels, (cap *= 2) * sizeof *labels);
        labels[n_labels] = json_string(label_of(line, (uint32_t)(p - line)));
        if (labels[n_labels].len > longest)
            longest = labels[n_labels].len;
        n_labels++;
        p += brk;
    }
    json = malloc(64 + (TOP + 1) * ((size_t)longest + 96));
}

/* --- scores as json.dumps writes round(score, 6) --- */

/* Python's repr of a finite double: its shortest round-tripping digits, fixed-point where
   the decimal point falls within -4 < position <= 16, else d.ddde±XX */
static int put_repr(char *out, double y) {
    if (y == 0.0)
        return sprintf(out, signbit(y) ? "-0.0" : "0.0");
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, y);
        if (strtod(e, NULL) == y)
            break;
    }
    char *o = out, digits[20];
    const char *s = e;
    if (*s == '-')
        *o++ = *s++;
    int n = 0;
    for (; *s != 'e'; s++)
        if (*s != '.')
            digits[n++] = *s;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    int point = atoi(s + 1) + 1;  /* digits are 0.DIGITS x 10^point */
    if (point <= -4 || point > 16) {
        *o++ = digits[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, n - 1);
            o += n - 1;
        }
        return (int)(o - out) + sprintf(o, "e%+03d", point - 1);
    }
    if (point <= 0) {
        o += sprintf(o, "0.%.*s%.*s", -point, "0000", n, digits);
    } else if (point < n) {
        o += sprintf(o, "%.*s.%.*s", point, digits, n - point, digits + point);
    } else {
        o += sprintf(o, "%.*s%.*s.0", n, digits, point - n, "0000000000000000");
    }
    return (int)(o - out);
}

/* json.dumps(round(x, 6)): correctly rounded to 6 places, half to even (as musl's printf
   and Python's round both round), then that double's repr; NaN and the infinities as
   json.dumps spells them. The common case needs no search: a number of at most 15
   significant digits is the shortest repr of the double nearest it, so from 1e-4 to 1e9
   the fixed-point digits, trailing zeros dropped, are it. */
static int put_score(char *out, double x) {
    if (isnan(x))
        return sprintf(out, "NaN");
    if (isinf(x))
        return sprintf(out, x > 0 ? "Infinity" : "-Infinity");
    char fixed[400];
    int n = snprintf(fixed, sizeof fixed, "%.6f", x);
    const char *digits = fixed + (fixed[0] == '-');
    if (fabs(x) >= 1e9 || strncmp(digits, "0.0000", 6) == 0)
        return put_repr(out, strtod(fixed, NULL));
    while (fixed[n - 1] == '0')
        n--;
    memcpy(out, fixed, n);
    if (fixed[n - 1] == '.')
        out[n++] = '0';
    return n;
}

/* --- inference --- */

static const char *const error_codes[] = {"invalid-argument", "invalid-encoding", "timeout", "runtime-error",
                                          "unsupported-operation", "too-large", "not-found", "security", "unknown"};

/* "WHAT: CODE: DATA" of a wasi:nn error, which is dropped */
static char *nn_failure(const char *what, nn_handle err) {
    int32_t code = nn_error_code(err);
    nn_string data;
    nn_error_data(err, &data);
    nn_error_drop(err);
    size_t n = strlen(what) + data.len + 32;
    char *text = malloc(n);
    snprintf(text, n, "%s: %s: %.*s", what, code >= 0 && code < 9 ? error_codes[code] : "unknown", (int)data.len,
             data.ptr);
    release((bytes_t){(uint8_t *)data.ptr, (uint32_t)data.len});
    return text;
}

/* the frame's top five as JSON into `json` (its length in *len), or an error (malloc'd) */
static char *classify(bytes_t frame, uint32_t *len) {
    static uint32_t dims[3] = {SIDE, SIDE, 3};
    static char input_name[] = "image";
    nn_named_tensor input = {{input_name, sizeof input_name - 1},
                             nn_tensor_new(dims, 3, NN_U8, frame.ptr, frame.len)};
    nn_compute_result out;
    nn_compute(context, &input, 1, &out);  /* the tensor is the host's now */
    if (out.is_err)
        return nn_failure("inference failed", out.u.err);
    nn_handle ranked = -1;
    for (size_t i = 0; i < out.u.ok.len; i++) {
        nn_named_tensor *t = &out.u.ok.ptr[i];
        if (ranked < 0 && t->name.len == 6 && memcmp(t->name.ptr, "ranked", 6) == 0)
            ranked = t->tensor;
        else
            nn_tensor_drop(t->tensor);
        release((bytes_t){(uint8_t *)t->name.ptr, (uint32_t)t->name.len});
    }
    release((bytes_t){(uint8_t *)out.u.ok.ptr, (uint32_t)out.u.ok.len});
    if (ranked < 0)
        return strdup("inference failed: the model has no output named 'ranked'");
    nn_bytes data;
    nn_tensor_data(ranked, &data);
    nn_tensor_drop(ranked);
    /* `ranked` is float32 [2, classes]: the scores, best first, then their class indices */
    size_t classes = data.len / 8;
    char *error = NULL;
    if (classes < TOP) {
        error = strdup("inference failed: the model's 'ranked' output holds fewer than 5 classes");
    } else {
        float scores[TOP], indices[TOP];
        memcpy(scores, data.ptr, sizeof scores);
        memcpy(indices, data.ptr + 4 * classes, sizeof indices);
        char *o = json;
        for (int k = 0; k < TOP; k++) {
            if (!(indices[k] > -1.0f && indices[k] < (float)n_labels)) {
                error = strdup("inference failed: a class index outside the labels");
                break;
            }
            bytes_t label = labels[(uint32_t)indices[k]];
            if (k == 0)
                o += sprintf(o, "{\"object\":{\"result\":%.*s,\"top5\":[", (int)label.len, (const char *)label.ptr);
            o += sprintf(o, "%s{\"label\":%.*s,\"index\":%u,\"score\":", k ? "," : "", (int)label.len,
                         (const char *)label.ptr, (unsigned)indices[k]);
            o += put_score(o, scores[k]);
            *o++ = '}';
        }
        o += sprintf(o, "]}}");
        *len = (uint32_t)(o - json);
    }
    release((bytes_t){data.ptr, (uint32_t)data.len});
    return error;
}

/* --- the exports --- */

static result_t result;
/* what the last result lent the host (its bytes, and an error's text), freed when the
   next call begins: the host has copied them by then */
static int lent;
static char *lent_error;

static void release_lent(void) {
    if (lent && !result.is_err) {
        data_model_t *m = &result.v.ok;
        if (m->tag == DM_MESSAGE) {
            m->v.message.payload = (bob_t){.tag = 1, .v.bytes = {empty, 0}};  /* `json`: kept */
            each_bob_of_message(&m->v.message, free_bob_bytes);
            if (m->v.message.properties.len)
                free(m->v.message.properties.ptr);
            free_bob_bytes(&m->v.message.timestamp.node_id);
        } else {
            free_bob_bytes(&m->v.snapshot.format);
            free_bob_bytes(&m->v.snapshot.timestamp.node_id);
        }
    }
    free(lent_error);
    lent_error = NULL;
    lent = 0;
}

static result_t *fail(char *text) {
    result.is_err = 1;
    result.v.error = (bytes_t){(uint8_t *)text, (uint32_t)strlen(text)};
    lent_error = text;
    lent = 1;
    return &result;
}

__attribute__((export_name("wasm-graph:processor/map@1.1.0#process")))
result_t *process(data_model_t *input) {
    release_lent();
    count_request(CONTEXT);
    data_model_t in = *input;
    free(input);
    bob_t *slot;
    if (in.tag == DM_SNAPSHOT) {
        slot = &in.v.snapshot.frame;
    } else if (in.tag == DM_MESSAGE) {
        slot = &in.v.message.payload;
    } else {
        release_bob(&in.v.raw);
        return fail(strdup("Unexpected input type."));
    }
    bytes_t frame = take_bob(slot);
    *slot = (bob_t){.tag = 1, .v.bytes = {empty, 0}};
    char *error = NULL;
    uint32_t len = 0;
    if (frame.len != FRAME_BYTES) {
        error = malloc(96);
        snprintf(error, 96, "a frame is %dx%d RGB, %d bytes; got %u", SIDE, SIDE, FRAME_BYTES, (unsigned)frame.len);
    } else {
        error = classify(frame, &len);
    }
    release(frame);
    if (error != NULL) {
        if (in.tag == DM_SNAPSHOT) {
            release_bob(&in.v.snapshot.format);
            release_bob(&in.v.snapshot.timestamp.node_id);
        } else {
            release_message_except_timestamp(&in.v.message);
            release_bob(&in.v.message.timestamp.node_id);
        }
        return fail(error);
    }
    *slot = (bob_t){.tag = 1, .v.bytes = {(uint8_t *)json, len}};
    result.is_err = 0;
    result.v.ok = in;
    lent = 1;
    return &result;
}

__attribute__((export_name("wasm-graph:processor/map@1.1.0#init")))
int32_t init(config_property_t *properties, uint32_t n_properties, module_schema_t *schemas, uint32_t n_schemas) {
    release_configuration(properties, n_properties, schemas, n_schemas);
    if (labels == NULL)
        read_labels();
    if (context >= 0) {
        nn_context_drop(context);
        context = -1;
    }
    nn_bytes model = {(uint8_t *)model_onnx, (size_t)(model_onnx_end - model_onnx)};
    nn_result r;
    nn_load(&model, 1, NN_ONNX, NN_CPU, &r);
    if (!r.is_err) {
        nn_handle graph = r.value;
        nn_init_execution_context(graph, &r);
        nn_graph_drop(graph);
    }
    if (r.is_err) {
        nn_string data;
        nn_error_data(r.value, &data);
        nn_error_drop(r.value);
        size_t n = data.len + 32;
        char *text = malloc(n);
        snprintf(text, n, "cannot load the model: %.*s", (int)data.len, data.ptr);
        release((bytes_t){(uint8_t *)data.ptr, (uint32_t)data.len});
        log_text(LOG_ERROR, CONTEXT, text);
        free(text);
        return 0;
    }
    context = r.value;
    log_text(LOG_INFO, CONTEXT, "model loaded");
    return 1;
}
