/* tokenizer.h — GPT-2 byte-level BPE built from the GGUF vocabulary and merges.
 *
 * Pre-tokenizer chosen from tokenizer.ggml.pre: "smollm" (digits split one by one), "qwen2",
 * and llama.cpp's default GPT-2 pattern otherwise. Special/control tokens (token_type 3/4) are
 * matched literally in the text when parse_special is set. */
#ifndef DS_TOKENIZER_H
#define DS_TOKENIZER_H

#include "common.h"
#include "gguf.h"

typedef struct ds_tokenizer ds_tokenizer;

ds_status ds_tokenizer_new(const gguf_file *g, ds_tokenizer **out);
void ds_tokenizer_free(ds_tokenizer *t);

int ds_tokenizer_n_vocab(const ds_tokenizer *t);
/* *out malloc'd, caller frees. */
ds_status ds_tokenizer_encode(const ds_tokenizer *t, const char *text, size_t len, bool add_bos,
                              bool parse_special, int32_t **out, int *n_out);
/* Raw bytes of a token (byte-level decoding applied). -1 if tok is out of range. */
int ds_tokenizer_piece(const ds_tokenizer *t, int32_t tok, bool render_special, char *buf, int cap);

int32_t ds_tokenizer_bos(const ds_tokenizer *t);
int32_t ds_tokenizer_eos(const ds_tokenizer *t);
bool ds_tokenizer_is_eog(const ds_tokenizer *t, int32_t tok);
bool ds_tokenizer_add_bos(const ds_tokenizer *t);  /* tokenizer.ggml.add_bos_token */
/* Token id of an exact token text, or -1. */
int32_t ds_tokenizer_find(const ds_tokenizer *t, const char *text);

#endif
