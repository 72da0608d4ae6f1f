/*
 * The small kernel's /sbin/init on hosts whose KVM is PVM: one user-mode instruction
 * jumping to itself, forever. It makes no system call (user-mode `syscall` does not
 * work under KVM's instruction emulator) and never exits, so pid 1 lives and the
 * kernel keeps answering on the network and writing back to its disk; the VMM's
 * process ends when the test kills it. Timer and device interrupts preempt it.
 */
	.globl _start
	.text
_start:
	jmp	_start
