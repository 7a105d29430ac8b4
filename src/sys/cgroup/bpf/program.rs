//! The device filter as eBPF instructions: pure code generation, no syscalls.
//!
//! **Registers.** On entry `r1` points to `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }`. The prologue loads `r2` = device type (`access_type & 0xffff`), `r3` = the requested
//! access bits not yet decided (`access_type >> 16`), `r4` = major, `r5` = minor. `r6`, `r7` are
//! scratch.
//!
//! **Rules, last first.** First the list is pruned ([`live_rules`]): a rule's bit is dead when a
//! later rule that matches at least the same devices names it, and a rule left without live bits
//! is dropped. So rules toggled at run time (`allow_audio`, `deny_audio`, again and again) do not
//! pile up in the program. Then one block per live rule, from the last to the first:
//! - the match test: `r6 = (r2 ^ type) | (r4 ^ major) | (r5 ^ minor)` over the fields the rule
//!   fixes (none for `a *:*`); if `r6 != 0` go to the next block;
//! - deny: if `r3` holds one of the rule's live bits, return 0;
//! - allow: clear the rule's live bits from `r3`; if nothing is left undecided, return 1.
//!
//! After the last block: return 0 (bits no rule decided are denied). Scanning from the last rule,
//! the first rule naming a bit is the last in list order, so this is the semantics of the parent
//! module. All compares are 32-bit (`BPF_JMP32`, Linux 5.1) so a `u32` major/minor is compared
//! exactly. Every jump goes forward to the end of its block: no loops, no long offsets.
//!
//! **Verifier cost.** The kernel's verifier walks every path; three things keep that linear in the
//! number of rules:
//! - The fields are compared through scratch registers, never `if r4 != major`: after that compare
//!   the verifier knows `r4 == major` on the path that goes on and follows it through all later
//!   blocks as a state of its own, one per distinct number in the list (a first version written
//!   that way was rejected at a thousand rules). It learns only `r6 == 0`, dead at the next block.
//! - One conditional jump per match test and per action, and where a conditional's two ways both
//!   go on to the next block the one that ends at once (`exit`) is the fall-through, which the
//!   verifier walks first. It keeps every branch still to be walked on a stack of at most 8192
//!   entries; this way each rule leaves one entry there (its match test), not four, so about 8000
//!   live rules with numbers fit.
//! - Pruning, above.

use crate::sys::cgroup::DeviceRule;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4` as a C bit-field: which nibble is which follows the byte order.
    regs: u8,
    off: i16,
    imm: i32,
}

// Instruction classes.
const LDX: u8 = 0x01;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
// Load size and mode.
const W: u8 = 0x00;
const MEM: u8 = 0x60;
// ALU operations.
const AND: u8 = 0x50;
const RSH: u8 = 0x70;
const OR: u8 = 0x40;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
// Jump operations.
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const EXIT: u8 = 0x90;
// Operand source: immediate or register.
const K: u8 = 0x00;
const X: u8 = 0x08;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;

/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR`: the device type in the low half of `access_type`.
pub(super) const DEV_BLOCK: u32 = 1;
pub(super) const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`: the access bits in the high half of `access_type`.
pub(super) const ACC_MKNOD: u32 = 1;
pub(super) const ACC_READ: u32 = 2;
pub(super) const ACC_WRITE: u32 = 4;

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        #[cfg(target_endian = "little")]
        let regs = (src << 4) | dst;
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | src;
        Insn { code, regs, off, imm }
    }

    #[cfg(test)]
    fn dst(&self) -> usize {
        #[cfg(target_endian = "little")]
        let r = self.regs & 0xf;
        #[cfg(target_endian = "big")]
        let r = self.regs >> 4;
        usize::from(r)
    }

    #[cfg(test)]
    fn src(&self) -> usize {
        #[cfg(target_endian = "little")]
        let r = self.regs >> 4;
        #[cfg(target_endian = "big")]
        let r = self.regs & 0xf;
        usize::from(r)
    }
}

/// `dst = *(u32 *)(src + off)`
const fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(LDX | MEM | W, dst, src, off, 0)
}

/// 32-bit `dst = dst <op> imm` (the upper half of `dst` becomes zero).
const fn alu32(op: u8, dst: u8, imm: u32) -> Insn {
    // The immediate's bits as the field's type; 32-bit ALU uses them unchanged.
    Insn::new(ALU | op | K, dst, 0, 0, imm as i32)
}

/// 32-bit `dst = dst <op> src`.
const fn alu32_reg(op: u8, dst: u8, src: u8) -> Insn {
    Insn::new(ALU | op | X, dst, src, 0, 0)
}

/// 32-bit `dst = src`.
const fn mov32_reg(dst: u8, src: u8) -> Insn {
    Insn::new(ALU | MOV | X, dst, src, 0, 0)
}

/// `if (u32)dst <op> imm goto +off`
const fn jmp32(op: u8, dst: u8, imm: u32, off: i16) -> Insn {
    // JMP32 compares the low 32 bits with the immediate's 32 bits: exact for every u32.
    Insn::new(JMP32 | op | K, dst, 0, off, imm as i32)
}

const fn exit() -> Insn {
    Insn::new(JMP | EXIT, 0, 0, 0, 0)
}

/// The access bits a rule names (`m`, `r`, `w`; other characters name none).
pub(super) fn access_bits(access: &str) -> u32 {
    access
        .chars()
        .map(|c| match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// Which devices a rule matches; None if none. A kind other than `a`, `c`, `b` (which
/// `DeviceRule::from_str` never produces) errs towards denying: such an allow rule matches nothing,
/// such a deny rule any type.
fn selector(rule: &DeviceRule) -> Option<Selector> {
    let kind = match rule.kind {
        'c' => Some(DEV_CHAR),
        'b' => Some(DEV_BLOCK),
        'a' => None,
        _ if rule.allow => return None,
        _ => None,
    };
    Some(Selector {
        kind,
        major: rule.major,
        minor: rule.minor,
    })
}

/// Which devices a rule matches; None = any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Selector {
    kind: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
}

impl Selector {
    /// Whether every device `other` matches is matched by `self` too.
    fn covers(&self, other: &Selector) -> bool {
        let field = |a: Option<u32>, b: Option<u32>| a.is_none() || a == b;
        field(self.kind, other.kind) && field(self.major, other.major) && field(self.minor, other.minor)
    }
}

/// A rule as it goes into the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiveRule {
    allow: bool,
    selector: Selector,
    /// The access bits this rule still decides.
    bits: u32,
}

/// The rules that can still decide something, last first. A bit of a rule is dead when a later
/// rule that covers it names the bit: for every device the rule matches, that later rule (or one
/// after it) decides the bit first. A rule without live bits is dropped, except an allow rule
/// that no later allow rule covers: it still decides a request without access bits.
fn live_rules(rules: &[DeviceRule]) -> Vec<LiveRule> {
    let mut later: Vec<(bool, Selector, u32)> = Vec::new();
    let mut live = Vec::new();
    for rule in rules.iter().rev() {
        let Some(selector) = selector(rule) else { continue };
        let bits = access_bits(&rule.access);
        let dead = later
            .iter()
            .filter(|(_, s, _)| s.covers(&selector))
            .fold(0, |acc, (_, _, b)| acc | b);
        let covered_by_allow = later.iter().any(|(allow, s, _)| *allow && s.covers(&selector));
        // One entry per kind of rule and selector, so toggled rules keep this short.
        match later
            .iter_mut()
            .find(|(a, s, _)| *a == rule.allow && *s == selector)
        {
            Some((_, _, b)) => *b |= bits,
            None => later.push((rule.allow, selector, bits)),
        }
        let bits = bits & !dead;
        if bits != 0 || (rule.allow && !covered_by_allow) {
            live.push(LiveRule {
                allow: rule.allow,
                selector,
                bits,
            });
        }
    }
    live
}

/// The filter program for an ordered rule list (see the module doc of `sys::cgroup::bpf` for the
/// semantics): the instructions `BPF_PROG_LOAD` takes for a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
pub fn device_filter_program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        load_u32(R2, R1, 0),
        mov32_reg(R3, R2),
        alu32(AND, R2, 0xffff),
        alu32(RSH, R3, 16),
        load_u32(R4, R1, 4),
        load_u32(R5, R1, 8),
    ];
    for rule in live_rules(rules) {
        let s = rule.selector;
        let fields = [(R2, s.kind), (R4, s.major), (R5, s.minor)];
        let mut test = Vec::new();
        for (reg, value) in fields.into_iter().filter_map(|(r, v)| v.map(|v| (r, v))) {
            if test.is_empty() {
                test.extend([mov32_reg(R6, reg), alu32(XOR, R6, value)]);
            } else {
                test.extend([mov32_reg(R7, reg), alu32(XOR, R7, value), alu32_reg(OR, R6, R7)]);
            }
        }
        let action: &[Insn] = if rule.allow {
            &[
                alu32(AND, R3, !rule.bits),
                jmp32(JNE, R3, 0, 2),
                alu32(MOV, R0, 1),
                exit(),
            ]
        } else {
            &[
                mov32_reg(R6, R3),
                alu32(AND, R6, rule.bits),
                jmp32(JEQ, R6, 0, 2),
                alu32(MOV, R0, 0),
                exit(),
            ]
        };
        if !test.is_empty() {
            p.extend(test);
            p.push(jmp32(JNE, R6, 0, action.len() as i16));
        }
        p.extend_from_slice(action);
    }
    p.extend([alu32(MOV, R0, 0), exit()]);
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs `prog` the way the kernel would on `ctx` (only the instructions the generator emits), and
    /// checks what the verifier would: known opcodes, registers read only after they were written,
    /// forward jumps inside the program, `r0` set at exit to 0 or 1.
    fn run(prog: &[Insn], ctx: [u32; 3]) -> u64 {
        let mut reg = [0u64; 11];
        let mut init = [false; 11];
        init[R1 as usize] = true;
        let mut pc = 0usize;
        loop {
            let insn = prog
                .get(pc)
                .copied()
                .unwrap_or_else(|| panic!("fell off at {pc}"));
            let (d, s) = (insn.dst(), insn.src());
            let imm = insn.imm as u32;
            let jump = |taken: bool| {
                assert!(insn.off >= 0, "backward jump at {pc}");
                if taken { pc + 1 + insn.off as usize } else { pc + 1 }
            };
            let read = |reg: &[u64; 11], init: &[bool; 11], r: usize| {
                assert!(init[r], "r{r} read before written at {pc}");
                reg[r]
            };
            pc = match insn.code {
                c if c == LDX | MEM | W => {
                    assert_eq!(s, R1 as usize, "load from something else than the ctx");
                    assert!(matches!(insn.off, 0 | 4 | 8), "ctx offset {}", insn.off);
                    reg[d] = u64::from(ctx[insn.off as usize / 4]);
                    init[d] = true;
                    pc + 1
                }
                c if c == ALU | MOV | X => {
                    reg[d] = read(&reg, &init, s) & 0xffff_ffff;
                    init[d] = true;
                    pc + 1
                }
                c if c == ALU | MOV | K => {
                    reg[d] = u64::from(imm);
                    init[d] = true;
                    pc + 1
                }
                c if c == ALU | XOR | K => {
                    reg[d] = u64::from(read(&reg, &init, d) as u32 ^ imm);
                    pc + 1
                }
                c if c == ALU | AND | K => {
                    reg[d] = u64::from(read(&reg, &init, d) as u32 & imm);
                    pc + 1
                }
                c if c == ALU | RSH | K => {
                    reg[d] = u64::from((read(&reg, &init, d) as u32) >> imm);
                    pc + 1
                }
                c if c == JMP32 | JNE | K => jump(read(&reg, &init, d) as u32 != imm),
                c if c == ALU | OR | X => {
                    reg[d] = u64::from(read(&reg, &init, d) as u32 | read(&reg, &init, s) as u32);
                    pc + 1
                }
                c if c == JMP32 | JEQ | K => jump(read(&reg, &init, d) as u32 == imm),
                c if c == JMP | EXIT => {
                    let r0 = read(&reg, &init, R0 as usize);
                    assert!(r0 <= 1, "returns {r0}");
                    return r0;
                }
                c => panic!("unexpected opcode {c:#x} at {pc}"),
            };
        }
    }

    /// The semantics, written the obvious way.
    fn reference(rules: &[DeviceRule], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
        let matches = |r: &DeviceRule| {
            let kind = match r.kind {
                'a' => true,
                'c' => dev_type == DEV_CHAR,
                'b' => dev_type == DEV_BLOCK,
                _ => !r.allow,
            };
            kind && r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor)
        };
        if access == 0 {
            return rules.iter().any(|r| r.allow && matches(r));
        }
        (0..16)
            .map(|b| 1u32 << b)
            .filter(|bit| access & bit != 0)
            .all(|bit| {
                rules
                    .iter()
                    .rev()
                    .find(|r| matches(r) && access_bits(&r.access) & bit != 0)
                    .is_some_and(|r| r.allow)
            })
    }

    fn allowed(rules: &[DeviceRule], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
        let ctx = [(access << 16) | dev_type, major, minor];
        match run(&device_filter_program(rules), ctx) {
            0 => false,
            1 => true,
            r => panic!("returned {r}"),
        }
    }

    fn rules(list: &[&str]) -> Vec<DeviceRule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    const C: u32 = DEV_CHAR;
    const B: u32 = DEV_BLOCK;
    const M: u32 = ACC_MKNOD;
    const R: u32 = ACC_READ;
    const W_: u32 = ACC_WRITE;

    #[test]
    fn empty_list_denies_everything() {
        for access in [M, R, W_, R | W_, M | R | W_] {
            assert!(!allowed(&[], C, 1, 3, access));
            assert!(!allowed(&[], B, 8, 0, access));
        }
        assert_eq!(device_filter_program(&[]).len(), 8);
        // A rule with type, major and minor: 2 + 3 + 3 to compare, the jump, 4 for the action.
        assert_eq!(device_filter_program(&rules(&["c 1:3 r"])).len(), 8 + 9 + 4);
    }

    #[test]
    fn exact_rule_and_partial_access() {
        let l = rules(&["c 1:3 rw"]);
        assert!(allowed(&l, C, 1, 3, R));
        assert!(allowed(&l, C, 1, 3, W_));
        assert!(allowed(&l, C, 1, 3, R | W_));
        assert!(!allowed(&l, C, 1, 3, M));
        assert!(!allowed(&l, C, 1, 3, R | M));
        assert!(!allowed(&l, B, 1, 3, R), "block device with the same numbers");
        assert!(!allowed(&l, C, 1, 4, R));
        assert!(!allowed(&l, C, 2, 3, R));
    }

    #[test]
    fn wildcards_and_type_a() {
        let l = rules(&["c 136:* rwm"]);
        assert!(allowed(&l, C, 136, 0, R | W_));
        assert!(allowed(&l, C, 136, 4711, M));
        assert!(!allowed(&l, C, 137, 0, R));
        let l = rules(&["a *:* r"]);
        assert!(allowed(&l, C, 1, 3, R));
        assert!(allowed(&l, B, 8, 0, R));
        assert!(!allowed(&l, B, 8, 0, R | W_));
        let l = rules(&["b *:0 w"]);
        assert!(allowed(&l, B, 8, 0, W_));
        assert!(!allowed(&l, B, 8, 1, W_));
        assert!(!allowed(&l, C, 8, 0, W_));
    }

    #[test]
    fn a_later_deny_wins_over_an_earlier_wildcard_allow() {
        let l = rules(&["c *:* rwm", "deny c 1:3 w"]);
        assert!(allowed(&l, C, 1, 3, R));
        assert!(!allowed(&l, C, 1, 3, W_));
        assert!(!allowed(&l, C, 1, 3, R | W_));
        assert!(allowed(&l, C, 1, 5, R | W_));
        // An earlier deny loses against a later allow.
        let l = rules(&["deny c 1:3 w", "c *:* rwm"]);
        assert!(allowed(&l, C, 1, 3, R | W_));
    }

    #[test]
    fn an_allow_appended_later_re_allows() {
        // allow_audio, deny_audio, allow_audio again (dev_access at run time).
        let mut l = rules(&["c 1:3 rwm", "c 116:* rw", "deny c 116:* rw"]);
        assert!(!allowed(&l, C, 116, 2, R));
        l.push("c 116:* rw".parse().unwrap());
        assert!(allowed(&l, C, 116, 2, R | W_));
        assert!(!allowed(&l, C, 116, 2, M));
        assert!(allowed(&l, C, 1, 3, R | W_ | M));
    }

    #[test]
    fn bits_are_decided_one_by_one() {
        // r from the first rule, w from the second; the deny of m does not touch r or w.
        let l = rules(&["c 5:* r", "c *:1 w", "deny a *:* m"]);
        assert!(allowed(&l, C, 5, 1, R | W_));
        assert!(!allowed(&l, C, 5, 1, R | W_ | M));
        assert!(!allowed(&l, C, 5, 2, R | W_));
        assert!(allowed(&l, C, 5, 2, R));
    }

    #[test]
    fn unknown_access_bits_and_empty_requests() {
        let l = rules(&["a *:* rwm"]);
        assert!(!allowed(&l, C, 1, 3, R | 8), "a bit no rule can name is denied");
        // No access bits: allowed iff an allow rule matches the device (as on cgroup v1).
        assert!(allowed(&l, C, 1, 3, 0));
        assert!(!allowed(&rules(&["c 1:5 r"]), C, 1, 3, 0));
        assert!(allowed(&rules(&["c 1:3 r", "deny c 1:3 r"]), C, 1, 3, 0));
    }

    #[test]
    fn shadowed_rules_are_pruned() {
        let sel = |major| Selector {
            kind: Some(DEV_CHAR),
            major: Some(major),
            minor: None,
        };
        // Audio toggled a hundred times: only the last allow and deny of 116 are left.
        let mut l = crate::sys::cgroup::default_devices();
        for _ in 0..100 {
            l.extend(rules(&["c 116:* rw", "deny c 116:* rw"]));
        }
        let live = live_rules(&l);
        assert_eq!(live.len(), 11 + 2, "{live:?}");
        assert_eq!(
            live[0],
            LiveRule {
                allow: false,
                selector: sel(116),
                bits: R | W_
            }
        );
        // The allow under it decides no bit; it stays for requests without bits.
        assert_eq!(live[1].bits, 0);
        assert!(allowed(&l, C, 116, 0, 0));
        assert!(!allowed(&l, C, 116, 0, R));
        // A later wildcard covers bits of earlier rules; a narrower later rule covers nothing; the
        // first rule is left without bits and a later allow covers it.
        let live = live_rules(&rules(&["c 1:3 rwm", "c 1:* w", "deny c *:* r", "c 1:3 m"]));
        let bits: Vec<u32> = live.iter().map(|r| r.bits).collect();
        assert_eq!(bits, [M, R, W_], "{live:?}");
        // A deny without live bits goes.
        assert_eq!(live_rules(&rules(&["deny c 1:3 r", "a *:* r"])).len(), 1);
    }

    #[test]
    fn numbers_above_i32_max_compare_exactly() {
        let big = |major: u32| DeviceRule {
            allow: true,
            kind: 'c',
            major: Some(major),
            minor: Some(u32::MAX),
            access: "r".into(),
        };
        for major in [0x8000_0000, u32::MAX, 0x7fff_ffff] {
            let l = [big(major)];
            assert!(allowed(&l, C, major, u32::MAX, R));
            assert!(!allowed(&l, C, major ^ 1, u32::MAX, R));
            assert!(!allowed(&l, C, major, 0x7fff_ffff, R));
        }
    }

    #[test]
    fn malformed_kinds_err_towards_deny() {
        let odd = |allow: bool| DeviceRule {
            allow,
            kind: 'x',
            major: None,
            minor: None,
            access: "rw".into(),
        };
        let all = rules(&["a *:* rwm"]);
        assert!(!allowed(&[odd(true)], C, 1, 3, R));
        assert!(!allowed(&[all[0].clone(), odd(false)], C, 1, 3, R));
        assert!(!allowed(&[all[0].clone(), odd(false)], B, 8, 0, W_));
        assert!(allowed(&[all[0].clone(), odd(false)], B, 8, 0, M));
    }

    #[test]
    fn the_default_set() {
        let l = crate::sys::cgroup::default_devices();
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 7),
        ] {
            assert!(allowed(&l, C, major, minor, M | R | W_), "{major}:{minor}");
        }
        assert!(!allowed(&l, B, 1, 3, R), "block 1:3");
        assert!(!allowed(&l, C, 1, 1, R), "/dev/mem");
        assert!(!allowed(&l, B, 8, 0, R), "/dev/sda");
    }

    fn rule_strategy() -> impl Strategy<Value = DeviceRule> {
        let number = prop::sample::select(vec![None, Some(1), Some(3), Some(136), Some(u32::MAX)]);
        (
            any::<bool>(),
            prop::sample::select(vec!['a', 'c', 'b']),
            number.clone(),
            number,
            1u32..8,
        )
            .prop_map(|(allow, kind, major, minor, bits)| {
                let (major, minor) = if kind == 'a' { (None, None) } else { (major, minor) };
                let access = [('r', ACC_READ), ('w', ACC_WRITE), ('m', ACC_MKNOD)]
                    .iter()
                    .filter(|(_, b)| bits & b != 0)
                    .map(|(c, _)| *c)
                    .collect();
                DeviceRule {
                    allow,
                    kind,
                    major,
                    minor,
                    access,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every request against random rule lists: the program and the reference agree.
        #[test]
        fn program_matches_reference(list in prop::collection::vec(rule_strategy(), 0..12)) {
            let prog = device_filter_program(&list);
            for dev_type in [DEV_BLOCK, DEV_CHAR] {
                for major in [1, 3, 136, 7, u32::MAX] {
                    for minor in [1, 3, 0, u32::MAX] {
                        for access in 0..8 {
                            let ctx = [(access << 16) | dev_type, major, minor];
                            let got = run(&prog, ctx) == 1;
                            let want = reference(&list, dev_type, major, minor, access);
                            prop_assert_eq!(
                                got, want,
                                "type {} {}:{} access {} rules {:?}", dev_type, major, minor, access,
                                list.iter().map(ToString::to_string).collect::<Vec<_>>()
                            );
                        }
                    }
                }
            }
        }
    }
}
