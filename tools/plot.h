/* plot.h — a tiny dependency-free SVG plot writer for sweep results (bench/results, eval/results).
 *
 * Two chart kinds, both self-contained SVG 1.1 files readable in any browser:
 *   ds_plot_lines  one shared x axis (linear or log), several y series as lines with markers;
 *                  NaN in y (or x, or x <= 0 on a log axis) leaves a gap in that series.
 *   ds_plot_bars   grouped bars: categories along x, one bar per series in each group; NaN bars
 *                  are left out. The y axis always includes 0.
 * Colours follow the Okabe-Ito colour-blind-safe palette; line markers also differ in shape, so
 * series stay distinguishable in greyscale. Titles and labels may be NULL. */
#ifndef DS_PLOT_H
#define DS_PLOT_H

#include "dsinfer.h"

/* y is [n_series][n_points] row-major; x is [n_points], shared by all series. log_x: log10 x axis
 * (ticks at the data's x values when there are at most 12 distinct ones, else at powers of ten;
 * multiples of 1024 print as 1K, 2K, ...). Returns DS_ERR_ARG for bad counts / NULL arrays,
 * DS_ERR_IO if the file cannot be written, DS_ERR_OOM. */
ds_status ds_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                        int log_x, int n_series, const char **series_names, int n_points,
                        const double *x, const double *y);

/* y is [n_series][n_categories] row-major. */
ds_status ds_plot_bars(const char *path, const char *title, const char *xlabel, const char *ylabel,
                       int n_categories, const char **category_names, int n_series,
                       const char **series_names, const double *y);

#endif
