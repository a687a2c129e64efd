/*
 * LD_PRELOAD shim for benchmarking Janus on loopback only.
 *
 * Janus' src/ice.c skips interfaces flagged IFF_LOOPBACK while gathering (before its
 * ice_enforce_list is read), and libnice drops them too, so Janus never offers a
 * 127.0.0.1 candidate. This wraps getifaddrs() and clears that flag in what it returns;
 * with ice_enforce_list = "127.0.0.1" Janus then gathers loopback and nothing else.
 *
 * Built at benchmark time: gcc -shared -fPIC -O2 -o libnoloopback.so noloopback.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap)
{
    static int (*real_getifaddrs)(struct ifaddrs **) = NULL;
    if (real_getifaddrs == NULL)
        real_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    if (real_getifaddrs == NULL)
        return -1;
    int rc = real_getifaddrs(ifap);
    if (rc == 0) {
        for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next)
            ifa->ifa_flags &= ~IFF_LOOPBACK;
    }
    return rc;
}
