/* Monotonic wall-clock time for deadlines, benchmarks and logs. */
#ifndef WEFT_TIMER_H
#define WEFT_TIMER_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC); never goes backwards. */
double weft_time_now(void);

#endif /* WEFT_TIMER_H */
