// Qt's QSemaphore behind a C interface, for sem-bench's `qt` peer. Each function is one call
// into QSemaphore; none of them throws (QSemaphore's acquire, release and tryAcquire do not).
#include <QtCore/QSemaphore>

extern "C" {

QSemaphore *futexscope_qt_sem_new(int permits) noexcept { return new QSemaphore(permits); }

void futexscope_qt_sem_free(QSemaphore *sem) noexcept { delete sem; }

void futexscope_qt_sem_acquire(QSemaphore *sem, int n) noexcept { sem->acquire(n); }

void futexscope_qt_sem_release(QSemaphore *sem, int n) noexcept { sem->release(n); }

bool futexscope_qt_sem_try_acquire_ms(QSemaphore *sem, int n, int timeout_ms) noexcept {
    return sem->tryAcquire(n, timeout_ms);
}
}
