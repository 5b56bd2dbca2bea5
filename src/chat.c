/* chat.c — chat prompt rendering.
 *
 * dsinfer does not run Jinja: it recognises the ChatML family (<|im_start|>role\n...<|im_end|>)
 * in the GGUF's tokenizer.chat_template, which covers SmolLM2 and Qwen2.5, and reuses the
 * template's built-in default system message (a literal '<|im_start|>system\n...<|im_end|>')
 * when the conversation has none, as the template itself would. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>

/* The template's default system text, if it has one, as a malloc'd string: the first
 * '<|im_start|>system\n' (escaped or raw newline) followed by literal text up to <|im_end|>. */
static char *default_system(const char *tmpl) {
    const char *opens[2] = {"<|im_start|>system\\n", "<|im_start|>system\n"};
    for (int k = 0; k < 2; k++) {
        size_t skip = strlen(opens[k]);
        for (const char *p = strstr(tmpl, opens[k]); p; p = strstr(p + 1, opens[k])) {
            const char *b = p + skip, *e = strstr(b, "<|im_end|>");
            if (!e) break;
            if (memchr(b, '{', (size_t)(e - b)) || memchr(b, '\'', (size_t)(e - b))) continue; /* an expression */
            char *out = malloc((size_t)(e - b) + 1);
            if (!out) return NULL;
            memcpy(out, b, (size_t)(e - b));
            out[e - b] = 0;
            return out;
        }
    }
    return NULL;
}

char *ds_chat_render(const ds_model *m, const ds_chat_msg *msgs, int n, bool add_assistant) {
    if (!m->chat_template || !strstr(m->chat_template, "<|im_start|>")) {
        ds_error(DS_ERR_UNSUPPORTED, "the model's chat template is not ChatML; only ChatML is supported");
        return NULL;
    }
    ds_sbuf b = {0};
    if (n == 0 || strcmp(msgs[0].role, "system") != 0) {
        char *sys = default_system(m->chat_template);
        if (sys) {
            ds_sb_add(&b, "<|im_start|>system\n");
            ds_sb_add(&b, sys);
            ds_sb_add(&b, "<|im_end|>\n");
            free(sys);
        }
    }
    for (int i = 0; i < n; i++) {
        ds_sb_add(&b, "<|im_start|>");
        ds_sb_add(&b, msgs[i].role);
        ds_sb_add(&b, "\n");
        ds_sb_add(&b, msgs[i].content);
        ds_sb_add(&b, "<|im_end|>\n");
    }
    if (add_assistant) ds_sb_add(&b, "<|im_start|>assistant\n");
    if (b.oom || !b.p) {
        free(b.p);
        ds_error(DS_ERR_OOM, "out of memory rendering the chat");
        return NULL;
    }
    return b.p;
}
