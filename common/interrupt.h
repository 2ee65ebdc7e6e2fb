// interrupt.h: Ctrl-C (SIGINT) for long jobs that stop cleanly.
//
// intr_install() takes SIGINT over: the first one only raises a flag that the job
// polls at safe points (qlora train after a step: it saves a checkpoint and the
// adapter, then exits 130; chat: the answer being generated stops; infer: the
// requests end with what they have). A second SIGINT before intr_clear() ends the
// process at once with status 130, as a user pressing Ctrl-C twice expects.
// intr_restore() gives SIGINT back its previous disposition.
#ifndef QL_INTERRUPT_H
#define QL_INTERRUPT_H

// The exit status of a process that SIGINT stopped (128 + 2), by shell convention.
#define QL_EXIT_INTERRUPTED 130

// Installs the handler. first_msg: written to stderr when the first SIGINT comes
// (a fixed string: it is written from the signal handler), or NULL.
void intr_install(const char *first_msg);
void intr_restore(void);
// Whether a SIGINT came since intr_install or the last intr_clear.
int intr_requested(void);
// Forget a SIGINT that was handled (chat: back at the prompt); the next one is a
// first one again.
void intr_clear(void);

#endif
