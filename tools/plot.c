/* plot.c — SVG line and grouped-bar charts (contract in plot.h).
 *
 * The whole document is built in memory and written at once, so a failed plot leaves no
 * half-written file behind. Text widths are estimated (0.6 em per character for the sans-serif
 * font) because SVG has no layout engine we can ask; margins and the legend are sized from that. */
#include "plot.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- output buffer */

typedef struct { char *p; size_t n, cap; int oom; } sbuf;

__attribute__((format(printf, 2, 3)))
static void out(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        size_t room = b->cap - b->n;
        va_list ap;
        va_start(ap, fmt);
        int n = b->p ? vsnprintf(b->p + b->n, room, fmt, ap) : -2;
        va_end(ap);
        if (n == -1) { b->oom = 1; return; }
        if (n >= 0 && (size_t)n < room) { b->n += (size_t)n; return; }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (n >= 0 && cap < b->n + (size_t)n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p; b->cap = cap;
    }
}

/* Text content or attribute value, XML-escaped; NULL prints nothing. */
static void out_text(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': out(b, "&amp;"); break;
        case '<': out(b, "&lt;"); break;
        case '>': out(b, "&gt;"); break;
        case '"': out(b, "&quot;"); break;
        default: out(b, "%c", *s);
        }
    }
}

static ds_status write_file(const char *path, sbuf *b) {
    if (b->oom) { free(b->p); return DS_ERR_OOM; }
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b->p, 1, b->n, f) == b->n;
    if (f && fclose(f)) ok = 0;
    free(b->p);
    return ok ? DS_OK : DS_ERR_IO;
}

/* ---------------------------------------------------------------- style */

static const char *const k_colors[] = {
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255",
    "#44AA99", "#999933",
};
#define N_COLORS ((int)(sizeof k_colors / sizeof k_colors[0]))
#define N_MARKERS 7
#define FONT "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""

static double text_w(const char *s, double size) { return s ? 0.6 * size * (double)strlen(s) : 0; }

/* Marker k (shape cycles independently of colour) centred at (x, y), radius r. */
static void out_marker(sbuf *b, int k, double x, double y, double r, const char *col) {
    const char *fill = "stroke=\"#ffffff\" stroke-width=\"1\"";
    switch (k % N_MARKERS) {
    case 0: out(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" %s/>\n", x, y, r, col, fill); break;
    case 1: out(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" %s/>\n",
                x - r * 0.9, y - r * 0.9, r * 1.8, r * 1.8, col, fill); break;
    case 2: out(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\" %s/>\n",
                x, y - r * 1.2, x + r * 1.1, y + r * 0.8, x - r * 1.1, y + r * 0.8, col, fill); break;
    case 3: out(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\" %s/>\n",
                x, y - r * 1.3, x + r * 1.1, y, x, y + r * 1.3, x - r * 1.1, y, col, fill); break;
    case 4: out(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\" %s/>\n",
                x, y + r * 1.2, x + r * 1.1, y - r * 0.8, x - r * 1.1, y - r * 0.8, col, fill); break;
    case 5: out(b, "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
                x - r, y - r, x + r, y + r, x - r, y + r, x + r, y - r, col); break;
    default: out(b, "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
                 x - r * 1.2, y, x + r * 1.2, y, x, y - r * 1.2, x, y + r * 1.2, col); break;
    }
}

/* ---------------------------------------------------------------- axes */

/* 1, 2, 5 or 10 times a power of ten, at least v (round up) or nearest (round). */
static double nice_num(double v, int round_it) {
    double e = floor(log10(v)), f = v / pow(10, e), nf;
    if (round_it) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    return nf * pow(10, e);
}

/* Expand [*lo, *hi] outward to whole multiples of a nice step giving about 4 to 8 intervals. */
static double nice_range(double *lo, double *hi) {
    if (!(*hi > *lo)) {                        /* flat data: open a window around it */
        double d = *lo != 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= d; *hi += d;
    }
    double step = nice_num((*hi - *lo) / 5, 1);
    *lo = floor(*lo / step + 1e-9) * step;
    *hi = ceil(*hi / step - 1e-9) * step;
    return step;
}

/* A tick label with just enough decimals for the step. */
static void fmt_tick(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;          /* no "-0" or 1e-17 from accumulated steps */
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4)) snprintf(buf, cap, "%g", v);
    else snprintf(buf, cap, "%.*f", dec > 8 ? 8 : dec, v);
}

/* Compact labels for log-axis ticks: sweep sizes are usually powers of two. */
static void fmt_compact(char *buf, size_t cap, double v) {
    if (v >= 1048576 && fmod(v, 1048576) == 0) snprintf(buf, cap, "%.0fM", v / 1048576);
    else if (v >= 1024 && fmod(v, 1024) == 0) snprintf(buf, cap, "%.0fK", v / 1024);
    else snprintf(buf, cap, "%g", v);
}

typedef struct {
    double W, H, L, T, PW, PH;   /* canvas, plot-area origin (left, top) and size, in px */
    double x0, x1, y0, y1;       /* data range shown (x in log10 units when log_x) */
    int log_x;
} frame;

static double fx(const frame *f, double x) {
    double v = f->log_x ? log10(x) : x;
    return f->L + (v - f->x0) / (f->x1 - f->x0) * f->PW;
}
static double fy(const frame *f, double y) { return f->T + f->PH - (y - f->y0) / (f->y1 - f->y0) * f->PH; }

static void out_header(sbuf *b, const frame *f, const char *title) {
    out(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
        f->W, f->H, f->W, f->H);
    out(b, "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    if (title) {
        out(b, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" " FONT ">",
            f->L + f->PW / 2);
        out_text(b, title);
        out(b, "</text>\n");
    }
}

/* Y grid + ticks + labels, axis lines, axis titles. x_bottom_gap: room taken by x tick labels. */
static void out_y_axis_and_labels(sbuf *b, const frame *f, double ystep, const char *xlabel,
                                  const char *ylabel, double x_bottom_gap) {
    double max_lw = 0;
    for (double v = f->y0; v <= f->y1 + ystep * 1e-6; v += ystep) {
        char lab[32];
        fmt_tick(lab, sizeof lab, v, ystep);
        double y = fy(f, v);
        out(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", f->L, y, f->L + f->PW, y);
        out(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", f->L - 5, y, f->L, y);
        out(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"12\" " FONT ">%s</text>\n",
            f->L - 8, y + 4, lab);
        if (text_w(lab, 12) > max_lw) max_lw = text_w(lab, 12);
    }
    out(b, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.2\"/>\n",
        f->L, f->T, f->T + f->PH, f->L + f->PW);
    if (xlabel) {
        out(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" " FONT ">",
            f->L + f->PW / 2, f->T + f->PH + x_bottom_gap + 20);
        out_text(b, xlabel);
        out(b, "</text>\n");
    }
    if (ylabel) {
        double x = f->L - max_lw - 18;
        out(b, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" " FONT ">",
            x, f->T + f->PH / 2);
        out_text(b, ylabel);
        out(b, "</text>\n");
    }
}

/* Legend box right of the plot area: a line + marker sample per series, or a bar swatch. */
static void out_legend(sbuf *b, const frame *f, int n, const char **names, int bars) {
    double x = f->L + f->PW + 16, y = f->T + 4, w = 0;
    for (int k = 0; k < n; k++) {
        double tw = text_w(names ? names[k] : "series 00", 12);
        if (tw > w) w = tw;
    }
    out(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ffffff\" stroke=\"#cccccc\"/>\n",
        x, y, w + 50, n * 20.0 + 10);
    for (int k = 0; k < n; k++) {
        const char *col = k_colors[k % N_COLORS];
        double cy = y + 15 + k * 20.0;
        if (bars) {
            out(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"11\" fill=\"%s\"/>\n", x + 8, cy - 5.5, col);
        } else {
            out(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                x + 6, cy, x + 32, cy, col);
            out_marker(b, k, x + 19, cy, 4, col);
        }
        out(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" " FONT ">", x + 40, cy + 4);
        if (names && names[k]) out_text(b, names[k]);
        else out(b, "series %d", k + 1);
        out(b, "</text>\n");
    }
}

/* Canvas layout shared by both charts: fixed plot area, left margin for y labels, right margin
 * for the legend (from the longest series name), bottom margin as the caller needs. */
static void layout(frame *f, int n_series, const char **names, double bottom) {
    double lw = 0;
    for (int k = 0; k < n_series; k++) {
        double tw = text_w(names ? names[k] : "series 00", 12);
        if (tw > lw) lw = tw;
    }
    f->L = 84; f->T = 48; f->PW = 560; f->PH = 340;
    f->W = f->L + f->PW + (n_series > 0 ? lw + 90 : 30);
    f->H = f->T + f->PH + bottom;
    double legend_h = n_series * 20.0 + 30;
    if (f->T + legend_h > f->H) f->H = f->T + legend_h;
}

/* ---------------------------------------------------------------- line chart */

static int usable_x(double x, int log_x) { return isfinite(x) && (!log_x || x > 0); }

ds_status ds_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                        int log_x, int n_series, const char **series_names, int n_points,
                        const double *x, const double *y) {
    if (!path || n_series < 0 || n_points < 0 || (n_points > 0 && !x) || (n_series > 0 && n_points > 0 && !y))
        return DS_ERR_ARG;
    /* Data ranges over the points that will be drawn. */
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < n_points; i++) {
        if (!usable_x(x[i], log_x)) continue;
        int any = 0;
        for (int s = 0; s < n_series; s++) {
            double v = y[(size_t)s * n_points + i];
            if (!isfinite(v)) continue;
            any = 1;
            if (v < ylo) ylo = v;
            if (v > yhi) yhi = v;
        }
        if (!any) continue;
        double xv = log_x ? log10(x[i]) : x[i];
        if (xv < xlo) xlo = xv;
        if (xv > xhi) xhi = xv;
    }
    int empty = !(xlo <= xhi);
    if (empty) { xlo = 0; xhi = 1; ylo = 0; yhi = 1; }

    frame f = { .log_x = log_x };
    layout(&f, n_series, series_names, 62);
    double ystep = nice_range(&ylo, &yhi), xstep = 0;
    f.y0 = ylo; f.y1 = yhi;

    /* X ticks: in log mode the distinct data x values when few (a sweep's sizes), else decades;
     * the shown range gets a small margin so end markers are not cut by the frame. */
    double ticks[64];
    int nt = 0;
    if (log_x) {
        for (int i = 0; i < n_points && nt <= 12; i++) {
            if (!usable_x(x[i], 1) || log10(x[i]) < xlo || log10(x[i]) > xhi) continue;
            int dup = 0;
            for (int j = 0; j < nt; j++) dup |= ticks[j] == x[i];
            if (!dup) ticks[nt++] = x[i];
        }
        if (empty || nt > 12) {
            nt = 0;
            for (double e = floor(xlo); e <= ceil(xhi) && nt < 64; e++) ticks[nt++] = pow(10, e);
            if (empty) xhi = 1;
            else { xlo = floor(xlo); xhi = ceil(xhi); }
        }
        double pad = xhi > xlo ? (xhi - xlo) * 0.04 : 0.3;
        f.x0 = xlo - pad; f.x1 = xhi + pad;
    } else {
        xstep = nice_range(&xlo, &xhi);
        f.x0 = xlo; f.x1 = xhi;
        for (double v = xlo; v <= xhi + xstep * 1e-6 && nt < 64; v += xstep) ticks[nt++] = v;
    }

    sbuf b = {0};
    out_header(&b, &f, title);
    for (int i = 0; i < nt; i++) {
        double px = fx(&f, ticks[i]);
        if (px < f.L - 0.5 || px > f.L + f.PW + 0.5) continue;
        char lab[32];
        if (log_x) fmt_compact(lab, sizeof lab, ticks[i]);
        else fmt_tick(lab, sizeof lab, ticks[i], xstep);
        out(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eeeeee\"/>\n", px, f.T, px, f.T + f.PH);
        out(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", px, f.T + f.PH, px, f.T + f.PH + 5);
        out(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" " FONT ">%s</text>\n",
            px, f.T + f.PH + 20, lab);
    }
    out_y_axis_and_labels(&b, &f, ystep, xlabel, ylabel, 24);
    if (empty) {
        out(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" fill=\"#888\" " FONT ">no data</text>\n",
            f.L + f.PW / 2, f.T + f.PH / 2);
    }

    /* Series: one path per series, restarting (M) after every gap; then markers on top. */
    for (int s = 0; s < n_series && !empty; s++) {
        const char *col = k_colors[s % N_COLORS];
        const double *ys = y + (size_t)s * n_points;
        int pen = 0, started = 0;
        for (int i = 0; i < n_points; i++) {
            if (!usable_x(x[i], log_x) || !isfinite(ys[i])) { pen = 0; continue; }
            if (!started) { out(&b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\" d=\"", col); started = 1; }
            out(&b, "%s%.1f %.1f", pen ? "L" : "M", fx(&f, x[i]), fy(&f, ys[i]));
            pen = 1;
        }
        if (started) out(&b, "\"/>\n");
        for (int i = 0; i < n_points; i++)
            if (usable_x(x[i], log_x) && isfinite(ys[i])) out_marker(&b, s, fx(&f, x[i]), fy(&f, ys[i]), 4, col);
    }
    if (n_series > 0) out_legend(&b, &f, n_series, series_names, 0);
    out(&b, "</svg>\n");
    return write_file(path, &b);
}

/* ---------------------------------------------------------------- bar chart */

ds_status ds_plot_bars(const char *path, const char *title, const char *xlabel, const char *ylabel,
                       int n_categories, const char **category_names, int n_series,
                       const char **series_names, const double *y) {
    if (!path || n_categories < 0 || n_series < 0 || (n_series > 0 && n_categories > 0 && !y))
        return DS_ERR_ARG;
    double ylo = 0, yhi = 0;                   /* bars grow from zero, so zero is always shown */
    int any = 0;
    for (int s = 0; s < n_series; s++)
        for (int c = 0; c < n_categories; c++) {
            double v = y[(size_t)s * n_categories + c];
            if (!isfinite(v)) continue;
            any = 1;
            if (v < ylo) ylo = v;
            if (v > yhi) yhi = v;
        }
    if (ylo == yhi) yhi = ylo + 1;

    /* Category labels rotate when they would not fit their group's width. */
    double max_cw = 0;
    for (int c = 0; c < n_categories; c++) {
        double tw = text_w(category_names ? category_names[c] : "00", 12);
        if (tw > max_cw) max_cw = tw;
    }
    frame f = {0};
    layout(&f, n_series, series_names, 62);
    double group = n_categories > 0 ? f.PW / n_categories : f.PW;
    int rotate = max_cw * 0.9 > group * 0.95;   /* 0.6 em overestimates typical words a little */
    double gap = rotate ? max_cw * 0.72 + 14 : 24;   /* sin/cos of the 40 degree slant */
    if (rotate) f.H += gap - 24;
    double ystep = nice_range(&ylo, &yhi);
    f.y0 = ylo; f.y1 = yhi;

    sbuf b = {0};
    out_header(&b, &f, title);
    out_y_axis_and_labels(&b, &f, ystep, xlabel, ylabel, gap);
    if (f.y0 < 0)
        out(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", f.L, fy(&f, 0), f.L + f.PW, fy(&f, 0));
    if (!any)
        out(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" fill=\"#888\" " FONT ">no data</text>\n",
            f.L + f.PW / 2, f.T + f.PH / 2);

    double bw = n_series > 0 ? group * 0.8 / n_series : 0;
    int values = n_series * n_categories <= 40 && bw >= 16;  /* value labels only where they fit */
    for (int c = 0; c < n_categories; c++) {
        double gx = f.L + c * group;
        for (int s = 0; s < n_series; s++) {
            double v = y[(size_t)s * n_categories + c];
            if (!isfinite(v)) continue;
            double bx = gx + group * 0.1 + s * bw, y0 = fy(&f, 0), y1 = fy(&f, v);
            double top = y1 < y0 ? y1 : y0, h = fabs(y1 - y0);
            out(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>",
                bx + 1, top, bw - 2, h, k_colors[s % N_COLORS]);
            if (series_names && series_names[s]) out_text(&b, series_names[s]);
            out(&b, ": %g</title></rect>\n", v);
            if (values)
                out(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" fill=\"#333\" " FONT ">%.3g</text>\n",
                    bx + bw / 2, v >= 0 ? top - 3 : top + h + 11, v);
        }
        double lx = gx + group / 2, ly = f.T + f.PH + 18;
        out(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", lx, f.T + f.PH, lx, f.T + f.PH + 4);
        if (rotate)
            out(&b, "<text transform=\"translate(%.1f %.1f) rotate(-40)\" text-anchor=\"end\" font-size=\"12\" " FONT ">", lx + 4, ly - 4);
        else
            out(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" " FONT ">", lx, ly);
        if (category_names && category_names[c]) out_text(&b, category_names[c]);
        else out(&b, "%d", c + 1);
        out(&b, "</text>\n");
    }
    if (n_series > 0) out_legend(&b, &f, n_series, series_names, 1);
    out(&b, "</svg>\n");
    return write_file(path, &b);
}
