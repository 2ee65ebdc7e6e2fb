// curve.h: the loss curve as an SVG picture (train loss per step, val loss at evals).
#ifndef QL_CURVE_H
#define QL_CURVE_H

// train (n_train) losses by step; val_step/val (n_val) points. Written atomically.
int curve_write_svg(const char *path, const float *train, int n_train, const int *val_step, const float *val,
                    int n_val, const char *title);

#endif
