/*
 * bcryptprimitives.dll shim for running Rust's Windows test binaries under Wine 8.
 *
 * Rust's standard library (1.78+) draws its random numbers from ProcessPrng in
 * bcryptprimitives.dll. Wine 8 (Debian 12's wine64) lacks that export, so every Rust
 * executable fails to start with STATUS_DLL_NOT_FOUND (c0000135). This DLL, placed
 * beside the executables, exports ProcessPrng and forwards to RtlGenRandom
 * (advapi32!SystemFunction036), which Wine has. Built by .ci/run with mingw-w64;
 * nothing of it ships: it only exists in CI's target directory.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* RtlGenRandom takes a ULONG: fill larger requests in pieces. */
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
