/* eval_tasks.h — synthetic long-context retrieval tasks (evaluation.md, "Retrieval").
 *
 * Each task is a generator: (model, task, seed, target length in tokens, needle depth) -> one
 * case = a long `material` (to be prefilled densely), a `question` (to be fed token by token
 * through the decode path, so the sparse attention is what has to find the answer) and the
 * expected `answer` with whatever the scorer needs. Everything comes from a splitmix64 stream
 * seeded by `seed`: the same (model, task, seed, target, depth) always gives the same case.
 *
 * Plain-text prompt layout (what the generator sizes): material + "\n" + question.
 * Chat models: ds_eval_render_chat() wraps that text as the user turn and splits the rendered
 * prompt just after that "\n" (see its comment for why the split is there).
 *
 * Only the public API (dsinfer.h) is used; the model is needed solely to count tokens. */
#ifndef DS_EVAL_TASKS_H
#define DS_EVAL_TASKS_H

#include "dsinfer.h"

typedef enum {
    DS_TASK_LINES,          /* LongChat key-value lines: "line <adj-noun>: REGISTER_CONTENT is <N>" */
    DS_TASK_PASSKEY,        /* one pass key hidden in repetitive filler */
    DS_TASK_NIAH,           /* RULER niah_single: one 7-digit magic number in essay-like filler */
    DS_TASK_NIAH_MULTIKEY,  /* RULER niah_multikey: several uuid -> uuid needles, ask one */
    DS_TASK_VT,             /* RULER variable tracking: one chain VAR A = n, VAR B = VAR A, ... */
    DS_TASK_CWE,            /* RULER common words: 10 words repeated far more often than the rest */
    DS_TASK_COUNT
} ds_task;

/* Scores are in thousandths: DS_EVAL_SCORE_MAX = fully correct, 0 = wrong. The single-answer
 * tasks (lines, passkey, niah, niah-multikey) only ever return 0 or DS_EVAL_SCORE_MAX; vt and cwe
 * return round(1000 * fraction of expected items found). Average and divide by 1000 for accuracy. */
#define DS_EVAL_SCORE_MAX 1000

typedef struct {
    char *material;      /* the long context, prefilled densely; never ends in whitespace */
    char *question;      /* asked after the material, fed through decode */
    char *answer;        /* the expected answer as text (vt: names joined by ", "; cwe: words) */
    ds_task task;
    uint64_t seed;
    int target_tokens;   /* what was asked for */
    int n_tokens;        /* tokens of material + "\n" + question (no BOS, no chat template) */
    int depth_percent;   /* where the needle / asked line sits (0..100); -1 for vt and cwe */
    long value;          /* lines/passkey: N or K; niah: the 7-digit number; vt: the chain value */
    int n_items;         /* strings the answer must contain: niah: the number; multikey: the */
    char **items;        /* value uuid; vt: the chain's variables; cwe: the 10 common words */
    int n_units;         /* the size knob the generator settled on (lines, sentences, words) */
} ds_eval_case;

/* Build one case. target_tokens: the plain-text prompt (material + "\n" + question) is sized to
 * within ~1% of it where the unit granularity allows (always within 5%); the chat template adds
 * a few dozen tokens on top. Minimum 256 (niah-multikey 512, cwe 768). depth_percent (0..100, or -1 = drawn from the
 * seed) places the needle for passkey / niah / niah-multikey (the asked needle) and chooses the
 * asked line for lines; ignored by vt and cwe. Returns DS_ERR_ARG for a bad task, target or depth,
 * DS_ERR_OOM, or the tokenizer's status. On failure *out is zeroed. */
ds_status ds_eval_make_case(const ds_model *m, ds_task task, uint64_t seed, int target_tokens,
                            int depth_percent, ds_eval_case *out);
void ds_eval_case_free(ds_eval_case *c);

/* Score a generated answer against the case, 0..DS_EVAL_SCORE_MAX (see above):
 *   lines: the last integer in the text == N        passkey: the first integer == K
 *   niah / niah-multikey: the number / uuid occurs (case-insensitive, not inside a longer word)
 *   vt / cwe: fraction of the chain variables / common words that occur as whole words. */
int ds_eval_score(ds_task task, const ds_eval_case *c, const char *generated);

/* "lines", "passkey", "niah", "niah-multikey", "vt", "cwe" (also accepts '_' for '-').
 * ds_task_parse returns 0 on success, -1 for an unknown name. */
int ds_task_parse(const char *name, ds_task *out);
const char *ds_task_name(ds_task t);

/* Render the case with the model's chat template as one user turn (material + "\n" + question)
 * followed by the assistant prefix, and split it in two: the return value is the part to
 * prefill densely (template head + material + "\n"), *question_part (malloc'd) the rest (the
 * question, end of the user turn, assistant prefix) to feed through decode. The two concatenate
 * to exactly ds_chat_render() of that turn, and tokenize separately (BOS on the first part only,
 * parse_special on both) to exactly the tokens of the whole. Returns NULL if the template is not
 * supported (ds_last_error says why) or on OOM. Free both with free(). */
char *ds_eval_render_chat(const ds_model *m, const ds_eval_case *c, char **question_part);

#endif
