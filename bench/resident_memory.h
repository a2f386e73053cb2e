// Peak resident memory of this process (Linux: VmHWM in /proc/self/status), resettable so that each phase of
// a benchmark reports its own peak.
#pragma once

namespace lcd {

// Resets the kernel's high-water mark to the current resident size (writes 5 to /proc/self/clear_refs).
void reset_peak_resident();
// VmHWM in GB (10⁹ bytes); 0 where it cannot be read.
double peak_resident_gb();
// VmRSS (resident now) in GB; 0 where it cannot be read.
double resident_gb();

}  // namespace lcd
