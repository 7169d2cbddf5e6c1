/*
 * kiln.h: the C API of kiln's runtime library (libkiln_runtime), which runs the ahead-of-time
 * artefacts that `kiln compile MODEL -o DIR` writes. C99; usable from C++.
 *
 *     #include "model.h"   // from the artefact directory; includes kiln.h
 *
 *     char err[256];
 *     kiln_model *m = kiln_load("out/gpt2", 0, err, sizeof err);
 *     if (!m) { fprintf(stderr, "%s\n", err); return 1; }
 *     int64_t shape[2] = {1, 16};
 *     kiln_tensor in[KILN_MODEL_INPUTS];
 *     in[KILN_MODEL_INPUT_input_ids] = (kiln_tensor){KILN_I64, 2, shape, ids};
 *     in[KILN_MODEL_INPUT_attention_mask] = (kiln_tensor){KILN_I64, 2, shape, mask};
 *     kiln_outputs *out;
 *     if (kiln_run(m, in, KILN_MODEL_INPUTS, &out, err, sizeof err) != 0) { ... }
 *     const kiln_tensor *logits = kiln_outputs_get(out, 0);
 *     ...
 *     kiln_outputs_free(out);
 *     kiln_free(m);
 *
 * Link with -lkiln_runtime (e.g. `cc app.c -Iinclude -Iout/gpt2 -Ltarget/release
 * -lkiln_runtime -Wl,-rpath,target/release`).
 *
 * Conventions:
 * - Tensors are dense and row-major (C order), elements in the host's byte order.
 * - Functions that can fail take `char *error, size_t error_size`: on failure they copy a
 *   one-line message (naming the file or input and the problem) into `error`, truncated to
 *   `error_size - 1` bytes and NUL-terminated. `error` may be NULL (or `error_size` 0) to
 *   discard the message.
 * - No function aborts the process (short of running out of memory) or lets an exception
 *   escape: an internal failure is reported as an error whose message starts with
 *   "internal error:".
 * - Every pointer the library returns stays valid until the object it came from is freed.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types, numbered as ONNX's TensorProto.DataType (and ONNX Runtime) number them.
 * `kiln_tensor.dtype` and the functions below use these values as int32_t. */
typedef enum kiln_dtype {
    KILN_F32 = 1,   /* float */
    KILN_U8 = 2,    /* uint8_t */
    KILN_I8 = 3,    /* int8_t */
    KILN_I32 = 6,   /* int32_t */
    KILN_I64 = 7,   /* int64_t */
    KILN_BOOL = 9,  /* one byte per element: 0 (false) or 1 (true); any nonzero input is true */
    KILN_F16 = 10,  /* IEEE 754 binary16, as its uint16_t bit pattern */
    KILN_BF16 = 16  /* bfloat16 (upper half of a float), as its uint16_t bit pattern */
} kiln_dtype;

/* A dense row-major tensor: `shape` has `rank` entries (ignored when `rank` is 0, a
 * scalar), `data` holds shape[0] * ... * shape[rank-1] elements of `dtype`. As an input it
 * is only read, in place, during kiln_run (the caller keeps ownership and must not change it
 * until kiln_run returns; data not aligned for its dtype is copied first); as an output it is
 * owned by its kiln_outputs. */
typedef struct kiln_tensor {
    int32_t dtype;        /* a kiln_dtype value */
    size_t rank;          /* number of dimensions */
    const int64_t *shape; /* `rank` sizes, each >= 0 */
    const void *data;     /* the elements, aligned for their type (may be NULL if none) */
} kiln_tensor;

/* A loaded artefact: its kernels, graph and memory-mapped weights. The artefact's files
 * must not be modified while it is loaded. */
typedef struct kiln_model kiln_model;

/* The outputs of one kiln_run, in the order of the model's outputs (model.h). */
typedef struct kiln_outputs kiln_outputs;

/* The size in bytes of one element of `dtype`, or 0 if `dtype` is not a kiln_dtype. */
size_t kiln_dtype_size(int32_t dtype);

/* Loads the artefact in directory `artifact_dir` (checking that its kernels match this
 * runtime and CPU). `threads` is the number of threads each run uses: 1 runs on the calling
 * thread, 0 uses every core. Returns NULL on failure, with a message in `error`. Free the
 * model with kiln_free. */
kiln_model *kiln_load(const char *artifact_dir, int threads, char *error, size_t error_size);

/* Frees a model (NULL is ignored); no kiln_run of it may be in progress. Outputs of its
 * runs stay valid. */
void kiln_free(kiln_model *model);

/* The number of inputs kiln_run takes (KILN_MODEL_INPUTS of model.h); 0 if `model` is NULL. */
size_t kiln_input_count(const kiln_model *model);

/* The name of input `index` (NUL-terminated, owned by the model), or NULL if `model` is NULL
 * or `index` is out of range. */
const char *kiln_input_name(const kiln_model *model, size_t index);

/* The dtype input `index` must have, or 0 if `model` is NULL or `index` is out of range. */
int32_t kiln_input_dtype(const kiln_model *model, size_t index);

/* The rank input `index` must have, or 0 if `model` is NULL or `index` is out of range. */
size_t kiln_input_rank(const kiln_model *model, size_t index);

/* The size dimension `axis` of input `index` must have, or -1 if it is symbolic (such as
 * `batch` or `seq`: any size, the same wherever the symbol appears) or the arguments are out
 * of range. */
int64_t kiln_input_dim(const kiln_model *model, size_t index, size_t axis);

/* The number of outputs kiln_run returns (KILN_MODEL_OUTPUTS); 0 if `model` is NULL. */
size_t kiln_output_count(const kiln_model *model);

/* The name of output `index` (owned by the model), or NULL if out of range. */
const char *kiln_output_name(const kiln_model *model, size_t index);

/* Runs the model on `input_count` inputs (KILN_MODEL_INPUTS of them, in model.h order; each
 * is read in place during the call and stays the caller's). On success returns 0 and stores
 * the outputs in `*outputs` (free them with kiln_outputs_free). On failure (a NULL pointer,
 * the wrong number of inputs, an input of the wrong dtype or rank or with a negative or wrong dim, a symbolic
 * dim given two different sizes, ...) returns nonzero, sets `*outputs` to NULL (if `outputs`
 * is not NULL) and puts a message naming the input in `error`. A model may be run from
 * several threads at once; the runs take turns. */
int kiln_run(const kiln_model *model, const kiln_tensor *inputs, size_t input_count,
             kiln_outputs **outputs, char *error, size_t error_size);

/* 1 if input `index` is a state: an input the model also outputs under the same name, such
 * as a causal model's KV cache (`cache_key.{layer}`, `cache_value.{layer}`), which
 * kiln_run_in_place updates in place; 0 if not, or if `model` is NULL or `index` is out of
 * range. */
int kiln_input_is_state(const kiln_model *model, size_t index);

/* kiln_run, but every state input (kiln_input_is_state) is updated in the caller's buffer
 * instead of copied: its `data` must point to writable memory of exactly its dtype and
 * shape, which the caller owns and nothing else touches during the call. The run writes the
 * state's new value there, and `*outputs` holds only the other outputs, in model.h order with
 * the states left out.
 *
 * A KV cache state is float [batch, kv_heads, capacity, head_dim]: the caller allocates it
 * once, zeroed, for `capacity` positions (the most the sequence will hold: prompt plus new
 * tokens), and passes the same buffers to prefill and to every decode step. A step's cache
 * length `past` is the attention_mask's columns less the new tokens; its keys and values go
 * to positions past .. past + seq - 1. A run that needs more than `capacity` positions, a
 * state of the wrong dtype or shape, or a NULL pointer is a nonzero status and a message, and
 * nothing is written outside the buffers. */
int kiln_run_in_place(const kiln_model *model, const kiln_tensor *inputs, size_t input_count,
                      kiln_outputs **outputs, char *error, size_t error_size);

/* The number of tensors in `outputs` (0 if NULL). */
size_t kiln_outputs_count(const kiln_outputs *outputs);

/* Output tensor `index` (NULL if `outputs` is NULL or `index` is out of range). It, its
 * shape and its data are owned by `outputs` and read-only. */
const kiln_tensor *kiln_outputs_get(const kiln_outputs *outputs, size_t index);

/* Frees the outputs of a run (NULL is ignored). */
void kiln_outputs_free(kiln_outputs *outputs);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
