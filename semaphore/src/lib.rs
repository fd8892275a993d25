//! A futex-based counting semaphore for Linux, in the spirit of Qt's `QSemaphore`, with USDT
//! markers on its slow paths so futexscope (or bpftrace, or perf) can see it wait and wake.

mod markers;
