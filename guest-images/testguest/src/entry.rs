//! Entry assembly: the PVH note, the 32-bit PVH entry (prints `NOVA-BOOTED` first),
//! the GDT, the static identity page tables (2 MiB pages over 4 GiB), the switch to
//! long mode, and the real-mode AP trampoline that brings the other vCPUs to `ap_main`.

/// Most APs the trampoline hands a stack to (so at most `MAX_APS + 1` vCPUs report).
pub const MAX_APS: u32 = 63;
/// Physical address the AP trampoline is copied to (SIPI vector 0x10).
pub const TRAMPOLINE_ADDR: usize = 0x10000;
/// STARTUP IPI vector matching [`TRAMPOLINE_ADDR`].
pub const TRAMPOLINE_VECTOR: u32 = (TRAMPOLINE_ADDR >> 12) as u32;

extern "C" {
    /// First byte of the real-mode AP trampoline (in the image, copied below 1 MiB).
    pub static ap_tramp_start: u8;
    /// One past the last byte of the trampoline.
    pub static ap_tramp_end: u8;
    /// End of everything the image occupies (code, data, stacks, DMA buffers), 4 KiB aligned.
    pub static __image_end: u8;
}

// Layout notes:
// - GDT selectors: 0x08 64-bit code, 0x10 flat data, 0x18 32-bit code (trampoline).
// - BSP stack: 64 KiB; AP stacks: 8 KiB each, handed out with `lock xadd`.
// - Page tables: PML4 -> one PDPT -> four PDs of 2 MiB pages, identity over 0..4 GiB,
//   built by the assembler so no guest instruction is spent on them.
core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 8                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32

    .section .rodata.boot_msg, "a", @progbits
boot_msg:
    .ascii "NOVA-BOOTED\n"
boot_msg_end:

    .section .text.entry, "ax", @progbits
    .code32
    .globl pvh_start32
pvh_start32:
    /* EBX = hvm_start_info; keep it. First act: the boot line on COM1, in one FIFO
       load: FIFOs on (FCR), wait for THRE, then `rep outsb` (3 exits, not 2 per byte). */
    mov $0x3fa, %dx
    mov $0x07, %al
    out %al, %dx
    mov $0x3fd, %dx
2:  in %dx, %al
    test $0x20, %al
    jz 2b
    cld
    mov $boot_msg, %esi
    mov $(boot_msg_end - boot_msg), %ecx
    mov $0x3f8, %dx
    rep outsb

    /* Zero .bss (small: only statics; stacks and DMA buffers live in .noinit). */
    cld
    xor %eax, %eax
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    rep stosb

    lgdt gdt_ptr
    call enable_long_mode_32
    ljmp $0x08, $bsp_long

    /* CR4.PAE, CR3, EFER.LME, CR0.PG|PE; clobbers EAX, ECX, EDX. */
enable_long_mode_32:
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ret

    .code64
bsp_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $bsp_stack_top, %esp
    mov %ebx, %edi
    call rust_main
3:  cli
    hlt
    jmp 3b

    /* ---- AP trampoline: copied to 0x10000, entered in real mode at 1000:0000. ---- */
    .code16
    .globl ap_tramp_start
ap_tramp_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl ap_tramp_gdt_ptr - ap_tramp_start
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $ap_start32
    .balign 4
ap_tramp_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
    .globl ap_tramp_end
ap_tramp_end:

    .code32
ap_start32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    /* A stack-less call is impossible; enable long mode inline. */
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ljmp $0x08, $ap_long

    .code64
ap_long:
    mov $1, %eax
    lock xadd %eax, ap_stack_next(%rip)
    cmp ${max_aps}, %eax
    jae 4f
    inc %eax
    shl $13, %eax
    mov $ap_stacks, %esp
    add %rax, %rsp
    call ap_main
4:  cli
    hlt
    jmp 4b

    .section .data.gdt, "aw", @progbits
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
    .quad 0x00cf9a000000ffff    /* 0x18: 32-bit code */
gdt_end:
    .balign 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .data.pagetables, "aw", @progbits
    .balign 4096
pml4:
    .quad pdpt + 3
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0003
    .quad pd + 0x1003
    .quad pd + 0x2003
    .quad pd + 0x3003
    .fill 508, 8, 0
pd:
    .set nova_pa, 0
    .rept 2048
    .quad nova_pa + 0x83        /* present, writable, 2 MiB */
    .set nova_pa, nova_pa + 0x200000
    .endr

    .section .bss.ap_stack_next, "aw", @nobits
    .balign 4
ap_stack_next:
    .long 0

    .section .bss.noinit.stacks, "aw", @nobits
    .balign 4096
    .skip 65536
bsp_stack_top:
ap_stacks:
    .skip 8192 * {max_aps}
    .text
"#,
    max_aps = const MAX_APS,
    options(att_syntax)
);
