// Replaces abseil's NominalCPUFrequency() in the statically linked plugin
// binary (linked with -Wl,--wrap=<that symbol>, see cni/CMakeLists.txt).
//
// Why: on x86-64 abseil measures the TSC frequency the first time anyone
// asks for it, unless the kernel exports
// /sys/devices/system/cpu/cpu0/tsc_freq_khz (only Google's kernels do): it
// sleeps 1 ms, 2 ms, 4 ms, ... until two measurements agree within 1%
// (absl/base/internal/sysinfo.cc, MeasureTscFrequency). absl::Mutex asks
// the first time a thread queues on a contended lock, only to decide how
// often to re-read the thread's scheduling priority (mutex.cc, Enqueue).
// gRPC's threads contend on their locks in most plugin runs (tearing down
// the EventEngine always does), so every exec paid 3 ms or more of sleep,
// and far more on a loaded node, where the measurements disagree.
// Nothing in the plugin needs the real frequency: abseil's clock calibrates
// the cycle counter on its own and gRPC uses clock_gettime. The value below
// only makes the priority re-read happen about once a second.
//
// The symbol name carries abseil's inline namespace (Debian: debian3);
// CMake derives it from absl/base/options.h.

#ifndef RULEPLANE_WRAP_NOMINAL_CPU_FREQUENCY
#error "RULEPLANE_WRAP_NOMINAL_CPU_FREQUENCY must name __wrap_<mangled absl::base_internal::NominalCPUFrequency>"
#endif

extern "C" double RuleplaneNominalCpuFrequency() __asm__(RULEPLANE_WRAP_NOMINAL_CPU_FREQUENCY);
extern "C" double RuleplaneNominalCpuFrequency() { return 1e9; }
