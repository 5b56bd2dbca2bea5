/* gen_model.h — `dsinfer gen-model`: write a GGUF with deterministic random weights at a real
 * model's shapes (llama / qwen2), so speed can be measured and GPU results checked against the
 * CPU on identical weights on a machine without model files. Details and weight scales in
 * gen_model.c. */
#ifndef DS_GEN_MODEL_H
#define DS_GEN_MODEL_H

#include <stdint.h>

/* The subcommand: argv[0] is "gen-model", flags follow. Returns the process exit status
 * (0 ok; non-zero after printing an error to stderr). Never exits the process. */
int ds_cmd_gen_model(int argc, char **argv);

/* What a command line would write, computed without writing anything (flags parsed and
 * validated exactly as ds_cmd_gen_model does; -o is not required). 0 ok, else non-zero after
 * printing the error. */
typedef struct {
    int n_tensors;
    uint64_t n_params;     /* elements over all tensors */
    uint64_t file_bytes;   /* exact size of the file */
} ds_gen_plan;
int ds_gen_model_plan(int argc, char **argv, ds_gen_plan *out);

/* Encode n floats (a multiple of the type's block) as one row of a GGUF weight type (ggml type
 * id: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K). Returns the bytes
 * written, or 0 for an unsupported type or a bad n. Exposed for the round-trip tests. */
uint64_t ds_gen_encode_row(uint32_t type, const float *src, void *dst, int64_t n);

#endif
