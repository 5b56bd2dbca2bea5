/* eval_tasks.c — generators and scorers for the retrieval tasks (contract in eval_tasks.h).
 *
 * Every generator is a pure function build(spec, n) of a size knob n (lines, filler sentences or
 * list words); all randomness comes from a splitmix64 stream restarted from the seed on every
 * call, and the draws that define the question (needle depth, key, value) come first so they do
 * not move while the sizer searches n. The sizer tokenizes the plain prompt and solves for n by
 * secant steps (tokens are close to linear in n), keeping the closest case. */
#include "eval_tasks.h"
#include "common.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- PRNG */

/* splitmix64: tiny, well mixed, and every seed (including 0) gives a good stream. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (rejection of the short top range). */
static uint64_t rng_below(uint64_t *s, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = rng_next(s); while (x >= lim);
    return x % n;
}

/* Same seed, different task -> unrelated streams, so seed 7 of niah is not seed 7 of passkey. */
static uint64_t rng_init(uint64_t seed, ds_task task) {
    uint64_t s = seed ^ ((uint64_t)(task + 1) * 0xd1342543de82ef95ULL);
    rng_next(&s);
    return s;
}

/* ---------------------------------------------------------------- string builder */

__attribute__((format(printf, 2, 3)))
static void sb_printf(ds_sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) { b->oom = 1; return; }  /* only short pieces here */
    ds_sb_addn(b, tmp, (size_t)n);
}

/* Hand over the buffer (an empty string rather than NULL when nothing was added). */
static char *sb_take(ds_sbuf *b) {
    if (!b->oom && !b->p) ds_sb_addn(b, "", 0);
    if (b->oom) { free(b->p); b->p = NULL; }
    char *p = b->p;
    b->p = NULL; b->n = b->cap = 0;
    return p;
}

/* Sentences joined by single spaces: the caller says when a new run starts. */
static void sb_sentence(ds_sbuf *b, const char *s, int *first) {
    if (!*first) ds_sb_add(b, " ");
    *first = 0;
    ds_sb_add(b, s);
}

/* ---------------------------------------------------------------- word material */

/* Keys are adjective-noun pairs (131 x 264 = 34,584 distinct); cwe draws from both lists. The
 * lists are disjoint (checked when written), so every word of their union is distinct. */
static const char *const k_adjectives[] = {
    "able", "agile", "amber", "ancient", "angry", "arctic", "bitter", "blazing", "bold", "brave",
    "breezy", "bright", "brisk", "broad", "calm", "careful", "cheerful", "chilly", "clever",
    "cloudy", "cosmic", "crimson", "crisp", "curious", "daring", "dark", "deep", "dusty", "eager",
    "early", "electric", "elegant", "empty", "endless", "faded", "fancy", "fierce", "flat",
    "fluffy", "fragile", "frosty", "gentle", "giant", "glassy", "gloomy", "golden", "graceful",
    "grand", "green", "grumpy", "happy", "hidden", "hollow", "honest", "humble", "icy", "idle",
    "jolly", "keen", "kind", "lazy", "lively", "lonely", "loud", "lucky", "mellow", "mighty",
    "misty", "modern", "muddy", "narrow", "noble", "noisy", "odd", "orange", "pale", "patient",
    "plain", "polite", "proud", "purple", "quick", "quiet", "rapid", "rare", "rough", "royal",
    "rusty", "sandy", "scarlet", "secret", "shallow", "sharp", "shiny", "silent", "silky",
    "simple", "sleepy", "slow", "small", "smooth", "snowy", "soft", "solid", "sour", "sparkling",
    "spicy", "steady", "stormy", "strange", "sturdy", "sunny", "sweet", "swift", "tall", "tame",
    "tender", "tidy", "tiny", "vast", "velvet", "vivid", "wandering", "warm", "wild", "windy",
    "wise", "witty", "wooden", "young", "zesty",
};
static const char *const k_nouns[] = {
    "anchor", "apple", "arrow", "attic", "badger", "bakery", "balloon", "bamboo", "banner",
    "barrel", "basket", "beacon", "beetle", "bell", "bicycle", "blanket", "boat", "bottle",
    "boulder", "bridge", "bucket", "butter", "cabin", "cactus", "camel", "candle", "canyon",
    "carpet", "castle", "cellar", "chair", "cherry", "chimney", "circle", "cliff", "clock",
    "cloud", "comet", "compass", "copper", "cottage", "crane", "crystal", "curtain", "daisy",
    "desert", "dolphin", "door", "dragon", "drum", "eagle", "engine", "falcon", "feather",
    "fence", "ferry", "field", "flute", "forest", "fountain", "fox", "garden", "garlic",
    "giraffe", "glacier", "glove", "goat", "harbor", "hammer", "harp", "hat", "hawk", "helmet",
    "hill", "honey", "horizon", "island", "jacket", "jungle", "kettle", "kite", "ladder",
    "lagoon", "lake", "lamp", "lantern", "lemon", "library", "lighthouse", "lion", "lizard",
    "locket", "magnet", "mango", "maple", "marble", "meadow", "mirror", "monkey", "moon",
    "mountain", "mushroom", "needle", "nest", "ocean", "orchard", "otter", "owl", "paddle",
    "palace", "panda", "parrot", "pebble", "pencil", "pepper", "piano", "pillow", "pine",
    "planet", "pocket", "pond", "puzzle", "quilt", "rabbit", "raccoon", "radio", "railway",
    "raven", "ribbon", "river", "robot", "rocket", "saddle", "sailor", "salmon", "scarf",
    "shadow", "shell", "shovel", "signal", "skate", "sparrow", "spider", "spoon", "spring",
    "squirrel", "stable", "staircase", "star", "statue", "storm", "stream", "street", "sugar",
    "summit", "sunflower", "swan", "sword", "table", "teapot", "temple", "thunder", "tiger",
    "timber", "tomato", "torch", "tower", "tractor", "train", "treasure", "tulip", "tunnel",
    "turtle", "umbrella", "valley", "violin", "volcano", "wagon", "walnut", "wall", "whale",
    "wheel", "whistle", "willow", "window", "wizard", "wolf", "yacht", "zebra", "acorn", "almond",
    "atlas", "avocado", "bison", "blossom", "bracelet", "breeze", "broom", "buffalo", "button",
    "cable", "canal", "canoe", "carrot", "cedar", "coconut", "coral", "cricket", "cup", "dune",
    "ember", "fiddle", "fig", "flag", "galaxy", "gate", "grape", "gravel", "hedge", "hive",
    "igloo", "iris", "ivy", "jar", "jewel", "kayak", "koala", "lemur", "lily", "llama", "lotus",
    "mitten", "moth", "napkin", "oak", "oar", "olive", "orbit", "oyster", "peach", "pear",
    "penguin", "pigeon", "plum", "pumpkin", "quartz", "reef", "robin", "sapphire", "scroll",
    "seal", "sled", "snail", "sofa", "spire", "sponge", "thimble", "thistle", "toad", "trumpet",
    "vase", "walrus", "wren", "yarn",
};
#define N_ADJ ((int)(sizeof k_adjectives / sizeof k_adjectives[0]))
#define N_NOUN ((int)(sizeof k_nouns / sizeof k_nouns[0]))

/* The passkey paper's filler (also RULER's noise for vt), one sentence per size unit. */
static const char *const k_grass[] = {
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
    "There and back again.",
};

/* niah haystack: essay-like sentences of our own, drawn at random so the context is varied
 * prose (a repeated block would let the model find the odd one out by pattern alone). No digits,
 * so the only numbers in the text are the needles'. */
static const char *const k_essay[] = {
    "The old bridge over the river was rebuilt twice before anyone thought to write down who had designed it.",
    "Most good ideas look obvious only after someone has spent years failing to find them.",
    "In the spring the market square fills with traders who arrive before dawn to claim the best corners.",
    "A careful reader notices not only what a letter says but also what it leaves out.",
    "The library kept its rarest maps in a cool room at the end of a long corridor.",
    "Small teams often move faster because every member can hold the whole plan in mind.",
    "When the wind turned north the fishing boats stayed in the harbor and the nets were mended.",
    "There is a particular pleasure in finishing a task that everyone else had quietly abandoned.",
    "The orchard behind the farmhouse produced more apples than the family could ever sell.",
    "Learning a craft slowly tends to leave deeper habits than learning it in a hurry.",
    "The train to the coast stopped at every village, and nobody on board seemed to mind.",
    "Writers who revise their drafts many times usually end up cutting far more than they add.",
    "The mountain path was narrow, but the view from the top repaid every difficult step.",
    "A city changes its character one shop, one street and one neighbour at a time.",
    "Curiosity is easier to keep alive when questions are welcomed rather than merely tolerated.",
    "The clockmaker explained that most broken clocks only need cleaning and a little patience.",
    "By late afternoon the light in the valley turned golden and the shadows grew long.",
    "Good tools do not make a good carpenter, but bad tools can certainly ruin a good one.",
    "The committee argued for hours before agreeing that the original proposal had been fine.",
    "Children often remember the stories they were told far better than the lessons they were taught.",
    "The lighthouse keeper wrote a short note about the weather in his journal every evening.",
    "Every garden reflects the habits of its gardener more honestly than any diary could.",
    "Some problems shrink the moment they are described clearly to another person.",
    "The museum moved its paintings to the basement whenever the roof began to leak.",
    "A long walk in the rain can settle a restless mind better than an afternoon of worrying.",
    "The baker insisted that the secret of good bread was time rather than any special flour.",
    "Old letters found in the attic revealed that the house had once been a village school.",
    "People tend to trust a plan more when they have had a hand in shaping it.",
    "The river flooded the lower fields each winter, leaving the soil rich and dark.",
    "An honest mistake admitted early costs far less than a clever excuse discovered late.",
    "The violinist practised the same short passage until it sounded effortless.",
    "Traffic in the old town slowed to a crawl whenever the weekly market was held.",
    "A quiet morning with nothing scheduled can be the most productive part of the week.",
    "The sailors told stories of islands that appeared on no chart and vanished by morning.",
    "Most disagreements about facts turn out, on closer inspection, to be disagreements about words.",
    "The village kept a single fire engine that was polished far more often than it was used.",
    "Reading widely gives a writer more ways to say a thing and more reasons to say it simply.",
    "The forest trail was marked with painted stones that hikers had added over many summers.",
    "Nobody could remember why the tower clock had always run a few minutes slow.",
    "A well organised kitchen lets the cook think about the food rather than the equipment.",
};
#define N_ESSAY ((int)(sizeof k_essay / sizeof k_essay[0]))

/* ---------------------------------------------------------------- small helpers */

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Draw the depth first (0..100 inclusive) so it is the same for every n the sizer tries. */
static int draw_depth(uint64_t *r, int depth) { return depth >= 0 ? depth : (int)rng_below(r, 101); }

/* Index among n+1 gaps (0 = before the first unit, n = after the last) for a depth in percent. */
static int depth_slot(int depth, int n) { return (int)(((long)depth * n + 50) / 100); }

/* An essay sentence index different from the previous one: back-to-back repeats read as an
 * obvious pattern that random prose would not have. */
static int draw_essay(uint64_t *r, int *prev) {
    int i;
    do i = (int)rng_below(r, N_ESSAY); while (i == *prev);
    *prev = i;
    return i;
}

static void adj_noun(uint64_t *r, char *buf, size_t cap) {
    snprintf(buf, cap, "%s-%s", k_adjectives[rng_below(r, N_ADJ)], k_nouns[rng_below(r, N_NOUN)]);
}

/* A version-4-looking uuid (lowercase 8-4-4-4-12) from two draws. */
static void draw_uuid(uint64_t *r, char buf[37]) {
    uint64_t a = rng_next(r), b = rng_next(r);
    a = (a & ~0xf000ULL) | 0x4000ULL;                          /* version nibble */
    b = (b & ~(0xc000ULL << 48)) | (0x8000ULL << 48);          /* variant bits 10 */
    snprintf(buf, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
             (unsigned)a & 0xffff, (unsigned)(b >> 48), (unsigned long long)(b & 0xffffffffffffULL));
}

/* Open-addressing set of 64-bit string hashes (FNV-1a), to keep drawn words distinct. A hash
 * collision would only make us skip a word, never admit a duplicate. */
typedef struct { uint64_t *slot; size_t mask; } hset;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h | 1;  /* 0 marks an empty slot */
}
static int hset_init(hset *h, size_t n) {
    size_t cap = 64;
    while (cap < 2 * n) cap *= 2;
    h->slot = calloc(cap, sizeof *h->slot);
    h->mask = cap - 1;
    return h->slot != NULL;
}
/* Returns 1 if inserted, 0 if already present. The table is sized for all inserts up front. */
static int hset_add(hset *h, const char *s) {
    uint64_t k = fnv1a(s);
    for (size_t i = k & h->mask;; i = (i + 1) & h->mask) {
        if (h->slot[i] == k) return 0;
        if (!h->slot[i]) { h->slot[i] = k; return 1; }
    }
}

static ds_status set_items(ds_eval_case *c, int n) {
    c->items = calloc((size_t)n, sizeof *c->items);
    if (!c->items) return DS_ERR_OOM;
    c->n_items = n;
    return DS_OK;
}

/* ---------------------------------------------------------------- generators */

/* What the generators share: the request, plus cwe's repetition counts (fixed per request). */
typedef struct {
    const ds_model *m;
    ds_task task;
    uint64_t seed;
    int target, depth;
    int cwe_common_reps, cwe_rare_reps;
} gen_spec;

typedef ds_status (*build_fn)(const gen_spec *g, int n, ds_eval_case *c);

/* lines: n records; depth picks the asked line (0% = first, 100% = last). */
static ds_status build_lines(const gen_spec *g, int n, ds_eval_case *c) {
    uint64_t r = rng_init(g->seed, g->task);
    c->depth_percent = draw_depth(&r, g->depth);
    int asked = (int)(((long)c->depth_percent * (n - 1) + 50) / 100);
    unsigned char *used = calloc((size_t)N_ADJ * N_NOUN, 1);
    if (!used) return DS_ERR_OOM;
    ds_sbuf b = {0};
    ds_sb_add(&b, "Below is a record of lines I want you to memorise. Each line starts with "
               "'line <line index>' and ends with a numerical value called <REGISTER_CONTENT>. "
               "Remember the <REGISTER_CONTENT> of every line index: when the record is over I "
               "will ask you for the <REGISTER_CONTENT> of one of them. The record starts now.\n\n");
    char key[64] = "";
    for (int i = 0; i < n; i++) {
        int a, k;
        do { a = (int)rng_below(&r, N_ADJ); k = (int)rng_below(&r, N_NOUN); } while (used[a * N_NOUN + k]);
        used[a * N_NOUN + k] = 1;
        long v = 1 + (long)rng_below(&r, 50000);
        sb_printf(&b, "%sline %s-%s: REGISTER_CONTENT is <%ld>", i ? "\n" : "", k_adjectives[a], k_nouns[k], v);
        if (i == asked) { snprintf(key, sizeof key, "%s-%s", k_adjectives[a], k_nouns[k]); c->value = v; }
    }
    free(used);
    c->material = sb_take(&b);
    sb_printf(&b, "Now the record is over. Tell me what is the <REGISTER_CONTENT> in line %s? "
                  "I need the number.", key);
    c->question = sb_take(&b);
    sb_printf(&b, "%ld", c->value);
    c->answer = sb_take(&b);
    return c->material && c->question && c->answer ? DS_OK : DS_ERR_OOM;
}

/* passkey: n filler sentences with the key sentence in gap depth_slot(depth, n). */
static ds_status build_passkey(const gen_spec *g, int n, ds_eval_case *c) {
    uint64_t r = rng_init(g->seed, g->task);
    c->depth_percent = draw_depth(&r, g->depth);
    c->value = 1 + (long)rng_below(&r, 50000);
    int at = depth_slot(c->depth_percent, n), first = 1;
    char needle[128];
    snprintf(needle, sizeof needle, "The pass key is %ld. Remember it. %ld is the pass key.", c->value, c->value);
    ds_sbuf b = {0};
    ds_sb_add(&b, "There is an important piece of information hidden inside a lot of irrelevant text. "
               "Find it and memorise it; I will ask you about it afterwards.\n");
    for (int i = 0; i <= n; i++) {
        if (i == at) sb_sentence(&b, needle, &first);
        if (i < n) sb_sentence(&b, k_grass[i % 5], &first);
    }
    c->material = sb_take(&b);
    c->question = dup_str("What is the pass key? The pass key is");
    sb_printf(&b, "%ld", c->value);
    c->answer = sb_take(&b);
    return c->material && c->question && c->answer ? DS_OK : DS_ERR_OOM;
}

/* niah (single): n random essay sentences, one "special magic number" needle at the depth. */
static ds_status build_niah(const gen_spec *g, int n, ds_eval_case *c) {
    uint64_t r = rng_init(g->seed, g->task);
    c->depth_percent = draw_depth(&r, g->depth);
    char key[64], needle[160], num[16];
    adj_noun(&r, key, sizeof key);
    c->value = 1000000 + (long)rng_below(&r, 9000000);
    snprintf(num, sizeof num, "%ld", c->value);
    snprintf(needle, sizeof needle, "One of the special magic numbers for %s is: %s.", key, num);
    int at = depth_slot(c->depth_percent, n), first = 1, prev = -1;
    ds_sbuf b = {0};
    ds_sb_add(&b, "A special magic number is hidden within the following text. Make sure to memorise "
               "it. I will quiz you about the number afterwards.\n");
    for (int i = 0; i <= n; i++) {
        if (i == at) sb_sentence(&b, needle, &first);
        if (i < n) sb_sentence(&b, k_essay[draw_essay(&r, &prev)], &first);
    }
    c->material = sb_take(&b);
    sb_printf(&b, "What is the special magic number for %s mentioned in the provided text? The special "
                  "magic number for %s mentioned in the provided text is", key, key);
    c->question = sb_take(&b);
    c->answer = dup_str(num);
    if (set_items(c, 1)) return DS_ERR_OOM;
    c->items[0] = dup_str(num);
    return c->material && c->question && c->answer && c->items[0] ? DS_OK : DS_ERR_OOM;
}

/* niah-multikey: MK_NEEDLES uuid->uuid needles in essay filler. Needle 0 is the asked one and
 * sits at the requested depth; the others are distractors at drawn depths. */
#define MK_NEEDLES 4
static ds_status build_multikey(const gen_spec *g, int n, ds_eval_case *c) {
    uint64_t r = rng_init(g->seed, g->task);
    c->depth_percent = draw_depth(&r, g->depth);
    char keys[MK_NEEDLES][37], vals[MK_NEEDLES][37];
    int at[MK_NEEDLES];
    for (int j = 0; j < MK_NEEDLES; j++) {
        draw_uuid(&r, keys[j]);
        draw_uuid(&r, vals[j]);
        at[j] = depth_slot(j == 0 ? c->depth_percent : (int)rng_below(&r, 101), n);
    }
    ds_sbuf b = {0};
    ds_sb_add(&b, "Some special magic uuids are hidden within the following text. Make sure to memorise "
               "them. I will quiz you about the uuids afterwards.\n");
    int first = 1, prev = -1;
    for (int i = 0; i <= n; i++) {
        for (int j = 0; j < MK_NEEDLES; j++) {
            if (at[j] != i) continue;
            char needle[160];   /* uuids are 36 characters */
            snprintf(needle, sizeof needle, "One of the special magic uuids for %.36s is: %.36s.", keys[j], vals[j]);
            sb_sentence(&b, needle, &first);
        }
        if (i < n) sb_sentence(&b, k_essay[draw_essay(&r, &prev)], &first);
    }
    c->material = sb_take(&b);
    sb_printf(&b, "What is the special magic uuid for %s mentioned in the provided text? The special "
                  "magic uuid for %s mentioned in the provided text is", keys[0], keys[0]);
    c->question = sb_take(&b);
    c->answer = dup_str(vals[0]);
    if (set_items(c, 1)) return DS_ERR_OOM;
    c->items[0] = dup_str(vals[0]);
    return c->material && c->question && c->answer && c->items[0] ? DS_OK : DS_ERR_OOM;
}

/* vt: one chain of VT_VARS variables (RULER's default: 1 chain, 4 hops) hidden in the grass
 * filler, statements in chain order at drawn gaps so the chain can be followed reading forward. */
#define VT_VARS 5
static ds_status build_vt(const gen_spec *g, int n, ds_eval_case *c) {
    uint64_t r = rng_init(g->seed, g->task);
    c->depth_percent = -1;
    c->value = 10000 + (long)rng_below(&r, 90000);
    char names[VT_VARS][6];
    for (int j = 0; j < VT_VARS; j++) {
        int dup;
        do {
            for (int k = 0; k < 5; k++) names[j][k] = (char)('A' + rng_below(&r, 26));
            names[j][5] = 0;
            dup = 0;
            for (int i = 0; i < j; i++) dup |= !strcmp(names[i], names[j]);
        } while (dup);
    }
    int at[VT_VARS];
    for (int j = 0; j < VT_VARS; j++) at[j] = (int)rng_below(&r, (uint64_t)n + 1);
    for (int j = 1; j < VT_VARS; j++)            /* insertion sort: statements stay in chain order */
        for (int i = j; i > 0 && at[i - 1] > at[i]; i--) { int t = at[i]; at[i] = at[i - 1]; at[i - 1] = t; }
    ds_sbuf b = {0};
    ds_sb_add(&b, "Memorise and track the chain of variable assignments hidden in the following text.\n");
    int first = 1, next = 0;
    for (int i = 0; i <= n; i++) {
        for (; next < VT_VARS && at[next] == i; next++) {
            char st[64];
            if (next == 0) snprintf(st, sizeof st, "VAR %s = %ld.", names[0], c->value);
            else snprintf(st, sizeof st, "VAR %s = VAR %s.", names[next], names[next - 1]);
            sb_sentence(&b, st, &first);
        }
        if (i < n) sb_sentence(&b, k_grass[i % 5], &first);
    }
    c->material = sb_take(&b);
    sb_printf(&b, "Question: which variables are assigned the value %ld in the text above, directly or "
                  "through other variables? There are %d of them. Answer: the variables assigned the "
                  "value %ld are:", c->value, VT_VARS, c->value);
    c->question = sb_take(&b);
    if (set_items(c, VT_VARS)) return DS_ERR_OOM;
    for (int j = 0; j < VT_VARS; j++) {
        c->items[j] = dup_str(names[j]);
        if (!c->items[j]) return DS_ERR_OOM;
        sb_printf(&b, "%s%s", j ? ", " : "", names[j]);
    }
    c->answer = sb_take(&b);
    return c->material && c->question && c->answer ? DS_OK : DS_ERR_OOM;
}

/* cwe: a numbered list where CWE_TOP words occur cwe_common_reps times each and n other words
 * cwe_rare_reps times each, in shuffled order. Words: our two lists first (shuffled), then
 * made-up pronounceable words (CV syllables) once those run out at long contexts. */
#define CWE_TOP 10
static ds_status build_cwe(const gen_spec *g, int n, ds_eval_case *c) {
    uint64_t r = rng_init(g->seed, g->task);
    c->depth_percent = -1;
    int n_real = N_ADJ + N_NOUN, n_words = CWE_TOP + n;
    int fc = g->cwe_common_reps, fu = g->cwe_rare_reps;
    long n_ent = (long)CWE_TOP * fc + (long)n * fu;
    char **words = calloc((size_t)n_words, sizeof *words);
    int *order = malloc(sizeof *order * (size_t)(n_real > n_ent ? n_real : n_ent));
    hset seen = {0};
    ds_sbuf b = {0};
    ds_status st = DS_ERR_OOM;
    if (!words || !order || !hset_init(&seen, (size_t)n_real + (size_t)n_words)) goto done;
    for (int i = 0; i < n_real; i++) order[i] = i;
    for (int i = n_real - 1; i > 0; i--) {        /* Fisher-Yates over the real words */
        int j = (int)rng_below(&r, (uint64_t)i + 1), t = order[i];
        order[i] = order[j]; order[j] = t;
    }
    for (int i = 0; i < n_real; i++) hset_add(&seen, i < N_ADJ ? k_adjectives[i] : k_nouns[i - N_ADJ]);
    for (int w = 0; w < n_words; w++) {
        if (w < n_real) {
            int i = order[w];
            words[w] = dup_str(i < N_ADJ ? k_adjectives[i] : k_nouns[i - N_ADJ]);
        } else {
            static const char cons[] = "bdfgklmnprstvz", vow[] = "aeiou";
            char pw[8];
            do {
                for (int k = 0; k < 3; k++) {
                    pw[2 * k] = cons[rng_below(&r, sizeof cons - 1)];
                    pw[2 * k + 1] = vow[rng_below(&r, sizeof vow - 1)];
                }
                pw[6] = 0;
            } while (!hset_add(&seen, pw));
            words[w] = dup_str(pw);
        }
        if (!words[w]) goto done;
    }
    long e = 0;                                    /* the multiset of entries, then shuffled */
    for (int w = 0; w < n_words; w++)
        for (int k = 0; k < (w < CWE_TOP ? fc : fu); k++) order[e++] = w;
    for (long i = n_ent - 1; i > 0; i--) {
        long j = (long)rng_below(&r, (uint64_t)i + 1);
        int t = order[i]; order[i] = order[j]; order[j] = t;
    }
    ds_sb_add(&b, "Below is a numbered list of words. Some words appear many more times than others; "
               "memorise the ones that appear most often.\n");
    for (long i = 0; i < n_ent; i++) sb_printf(&b, "%s%ld. %s", i ? " " : "", i + 1, words[order[i]]);
    c->material = sb_take(&b);
    sb_printf(&b, "Question: What are the %d most common words in the above list? Answer: The top %d "
                  "words that appear most often in the list are:", CWE_TOP, CWE_TOP);
    c->question = sb_take(&b);
    if (set_items(c, CWE_TOP)) goto done;
    for (int w = 0; w < CWE_TOP; w++) {
        c->items[w] = dup_str(words[w]);
        if (!c->items[w]) goto done;
        sb_printf(&b, "%s%s", w ? ", " : "", words[w]);
    }
    c->answer = sb_take(&b);
    c->value = fc;
    st = c->material && c->question && c->answer ? DS_OK : DS_ERR_OOM;
done:
    if (words) for (int w = 0; w < n_words; w++) free(words[w]);
    free(words);
    free(order);
    free(seen.slot);
    free(b.p);
    return st;
}

/* ---------------------------------------------------------------- sizing */

void ds_eval_case_free(ds_eval_case *c) {
    if (!c) return;
    free(c->material);
    free(c->question);
    free(c->answer);
    for (int i = 0; i < c->n_items; i++) free(c->items[i]);
    free(c->items);
    memset(c, 0, sizeof *c);
}

/* Tokens of the plain prompt material + "\n" + question, as the sizer defines the length. */
static ds_status count_prompt(const ds_model *m, const ds_eval_case *c, int *n_tok) {
    size_t lm = strlen(c->material), lq = strlen(c->question);
    char *p = malloc(lm + lq + 2);
    if (!p) return DS_ERR_OOM;
    memcpy(p, c->material, lm);
    p[lm] = '\n';
    memcpy(p + lm + 1, c->question, lq + 1);
    int32_t *t = NULL;
    ds_status st = ds_tokenize(m, p, lm + lq + 1, false, false, &t, n_tok);
    ds_free_tokens(t);
    free(p);
    return st;
}

/* Find n >= n_min whose case is closest to g->target tokens: secant steps on tokens(n), at
 * most 12 builds, stopping within 1%. Fails with DS_ERR_ARG if the best is more than 5% off. */
static ds_status make_sized(const gen_spec *g, build_fn build, int n_guess, int n_min, int n_max,
                            ds_eval_case *out) {
    enum { MAX_IT = 12 };
    int tn[MAX_IT], tt[MAX_IT], nt = 0;
    ds_eval_case best = {0};
    long best_err = LONG_MAX;
    int n = n_guess < n_min ? n_min : n_guess > n_max ? n_max : n_guess;
    for (int it = 0; it < MAX_IT; it++) {
        ds_eval_case c = {0};
        c.task = g->task; c.seed = g->seed; c.target_tokens = g->target; c.n_units = n;
        ds_status st = build(g, n, &c);
        if (!st) st = count_prompt(g->m, &c, &c.n_tokens);
        if (st) { ds_eval_case_free(&c); ds_eval_case_free(&best); return st; }
        tn[nt] = n; tt[nt] = c.n_tokens; nt++;
        long err = labs((long)c.n_tokens - g->target);
        if (err < best_err) { ds_eval_case_free(&best); best = c; best_err = err; }
        else ds_eval_case_free(&c);
        if (err * 100 <= g->target) break;
        double slope = nt >= 2 && tn[nt - 1] != tn[nt - 2]
            ? (double)(tt[nt - 1] - tt[nt - 2]) / (tn[nt - 1] - tn[nt - 2])
            : (double)tt[nt - 1] / tn[nt - 1];
        if (slope <= 0.5) slope = 0.5;
        int step = (int)lround((g->target - tt[nt - 1]) / slope);
        if (step == 0) step = g->target > tt[nt - 1] ? 1 : -1;
        int next = n + step;
        next = next < n_min ? n_min : next > n_max ? n_max : next;
        for (int i = 0; i < nt; i++)                 /* already measured: nudge by one unit */
            if (tn[i] == next) { next += step > 0 ? 1 : -1; i = -1; if (next < n_min || next > n_max) break; }
        if (next < n_min || next > n_max) break;
        n = next;
    }
    if (best_err * 20 > g->target) { ds_eval_case_free(&best); return DS_ERR_ARG; }
    *out = best;
    return DS_OK;
}

/* The fixed parts (instructions, question, four uuid needles, cwe's top-word repetitions) must
 * leave room for the filler the sizer adjusts. */
static int min_target(ds_task task) {
    return task == DS_TASK_CWE ? 768 : task == DS_TASK_NIAH_MULTIKEY ? 512 : 256;
}

ds_status ds_eval_make_case(const ds_model *m, ds_task task, uint64_t seed, int target_tokens,
                            int depth_percent, ds_eval_case *out) {
    memset(out, 0, sizeof *out);
    if (!m || (int)task < 0 || task >= DS_TASK_COUNT || depth_percent < -1 || depth_percent > 100 ||
        target_tokens < min_target(task) || target_tokens > (1 << 24))
        return DS_ERR_ARG;
    gen_spec g = { m, task, seed, target_tokens, depth_percent, 30, 3 };
    /* Initial guesses from rough tokens per unit; the sizer corrects them. */
    switch (task) {
    case DS_TASK_LINES:
        return make_sized(&g, build_lines, target_tokens / 22, 2, N_ADJ * N_NOUN / 2, out);
    case DS_TASK_PASSKEY:
        return make_sized(&g, build_passkey, target_tokens / 5, 1, INT_MAX / 2, out);
    case DS_TASK_NIAH:
        return make_sized(&g, build_niah, target_tokens / 18, 1, INT_MAX / 2, out);
    case DS_TASK_NIAH_MULTIKEY:
        return make_sized(&g, build_multikey, target_tokens / 18, 1, INT_MAX / 2, out);
    case DS_TASK_VT:
        return make_sized(&g, build_vt, target_tokens / 5, 1, INT_MAX / 2, out);
    case DS_TASK_CWE: {
        /* RULER's 30 vs 3 repetitions need room: 300 entries for the top words alone. Measure
         * tokens per entry with a trial list, then scale both counts down together (ratio kept
         * at 10:1) when the target cannot hold 30/3 with at least 60 other words. */
        ds_eval_case trial = {0};
        ds_status st = build_cwe(&g, 100, &trial);
        if (!st) st = count_prompt(m, &trial, &trial.n_tokens);
        int tok = trial.n_tokens;
        ds_eval_case_free(&trial);
        if (st) return st;
        double per_entry = tok / (double)(CWE_TOP * 30 + 100 * 3);
        double entries = target_tokens / per_entry;
        if (entries < CWE_TOP * 30 + 60 * 3) { g.cwe_common_reps = 20; g.cwe_rare_reps = 2; }
        if (entries < CWE_TOP * 20 + 60 * 2) { g.cwe_common_reps = 10; g.cwe_rare_reps = 1; }
        int guess = (int)((entries - CWE_TOP * g.cwe_common_reps) / g.cwe_rare_reps);
        return make_sized(&g, build_cwe, guess, 20, INT_MAX / 8, out);
    }
    default:
        return DS_ERR_ARG;
    }
}

/* ---------------------------------------------------------------- scoring */

/* First (or last) run of ASCII digits as a number; -1 if none, -2 if absurdly long. */
static long find_int(const char *s, int last) {
    long found = -1;
    for (const char *p = s; *p;) {
        if (!isdigit((unsigned char)*p)) { p++; continue; }
        long v = 0;
        int nd = 0;
        for (; isdigit((unsigned char)*p); p++, nd++) if (nd < 18) v = v * 10 + (*p - '0');
        found = nd > 18 ? -2 : v;
        if (!last) return found;
    }
    return found;
}

/* Case-insensitive occurrence of w that is not part of a longer alphanumeric run, so that "art"
 * is not found in "party" nor 1234567 in 12345678. */
static int has_word(const char *s, const char *w) {
    size_t n = strlen(w);
    if (!n) return 0;
    for (const char *p = s; *p; p++) {
        if (strncasecmp(p, w, n)) continue;
        int left = p == s || !isalnum((unsigned char)p[-1]);
        int right = !isalnum((unsigned char)p[n]);
        if (left && right) return 1;
    }
    return 0;
}

int ds_eval_score(ds_task task, const ds_eval_case *c, const char *generated) {
    if (!c || !generated) return 0;
    switch (task) {
    case DS_TASK_LINES: return find_int(generated, 1) == c->value ? DS_EVAL_SCORE_MAX : 0;
    case DS_TASK_PASSKEY: return find_int(generated, 0) == c->value ? DS_EVAL_SCORE_MAX : 0;
    case DS_TASK_NIAH:
    case DS_TASK_NIAH_MULTIKEY:
        return c->n_items > 0 && has_word(generated, c->items[0]) ? DS_EVAL_SCORE_MAX : 0;
    case DS_TASK_VT:
    case DS_TASK_CWE: {
        if (c->n_items <= 0) return 0;
        int hit = 0;
        for (int i = 0; i < c->n_items; i++) hit += has_word(generated, c->items[i]);
        return (hit * DS_EVAL_SCORE_MAX + c->n_items / 2) / c->n_items;
    }
    default: return 0;
    }
}

/* ---------------------------------------------------------------- names */

static const char *const k_task_names[DS_TASK_COUNT] = {
    "lines", "passkey", "niah", "niah-multikey", "vt", "cwe",
};

const char *ds_task_name(ds_task t) {
    return (int)t >= 0 && t < DS_TASK_COUNT ? k_task_names[t] : "unknown";
}

int ds_task_parse(const char *name, ds_task *out) {
    static const struct { const char *alias; ds_task t; } aliases[] = {
        {"longchat", DS_TASK_LINES}, {"niah-single", DS_TASK_NIAH},
        {"variable-tracking", DS_TASK_VT}, {"common-words", DS_TASK_CWE},
    };
    char buf[32];
    size_t n = strlen(name);
    if (n >= sizeof buf) return -1;
    for (size_t i = 0; i <= n; i++) buf[i] = name[i] == '_' ? '-' : (char)tolower((unsigned char)name[i]);
    for (int t = 0; t < DS_TASK_COUNT; t++)
        if (!strcmp(buf, k_task_names[t])) { *out = (ds_task)t; return 0; }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(buf, aliases[i].alias)) { *out = aliases[i].t; return 0; }
    return -1;
}

/* ---------------------------------------------------------------- chat split */

/* Where the split lies, and why there: the user turn is material + "\n" + question, and the
 * split is right after that "\n". Prefilling must not see any question token, and the two parts
 * are tokenized separately, so the cut must sit on a pre-token boundary in every pre-tokenizer
 * we support. The material never ends in whitespace and every question starts with a letter:
 *   gpt2/smollm: "...X" | "\n" | "Question"  — a lone "\n" followed by a letter is always its own
 *                piece (\s+(?!\S) cannot take it, \s+ takes just it), and at the end of the prefix
 *                \s+(?!\S) takes the same single "\n";
 *   qwen2:       a trailing punctuation run absorbs following newlines (" ?[^\s..]+[\r\n]*"), or
 *                \s*[\r\n]+ takes the "\n" alone after a word; either way the piece ends at the
 *                "\n", and a letter run cannot start with "\n" ([^\r\n\p{L}\p{N}]?\p{L}+).
 * A blank line ("\n\n") has no safe cut: after both newlines breaks gpt2 (which pieces "\n\nQ" as
 * "\n","\n" but a trailing "\n\n" as one), after the first breaks qwen2 (".\n\n" is one piece);
 * both measured. tests/test_eval_tasks.c checks token-for-token equality on every task. */
char *ds_eval_render_chat(const ds_model *m, const ds_eval_case *c, char **question_part) {
    *question_part = NULL;
    size_t lm = strlen(c->material), lq = strlen(c->question);
    char *content = malloc(lm + lq + 2);
    if (!content) return NULL;
    memcpy(content, c->material, lm);
    content[lm] = '\n';
    memcpy(content + lm + 1, c->question, lq + 1);
    ds_chat_msg msg = { "user", content };
    char *full = ds_chat_render(m, &msg, 1, true);
    /* The template copies the content verbatim, so it is found as one piece. */
    const char *at = full ? strstr(full, content) : NULL;
    free(content);
    if (!at) { free(full); return NULL; }
    size_t cut = (size_t)(at - full) + lm + 1;
    *question_part = dup_str(full + cut);
    if (!*question_part) { free(full); return NULL; }
    full[cut] = 0;  /* the prefix keeps the original allocation */
    return full;
}
