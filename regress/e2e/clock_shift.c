/*
 * clock_shift.so, preloaded into laimd by t_clock_step: moves the wall
 * clock of laimd's processes as a step of the system's date would, and no
 * other clock. CLOCK_REALTIME (as time(), gettimeofday() and
 * clock_gettime() report it) is shifted by the seconds in the 8-byte file
 * LAIM_CLOCK_SHIFT names. The file is mapped shared when the library
 * loads, before laimd forks and confines its children, so a write by the
 * case moves the clock of every process at once, with no system call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile const int64_t* shift;
static int (*real_clock_gettime)(clockid_t, struct timespec*);

__attribute__((constructor)) static void clock_shift_init(void)
{
	const char* path = getenv("LAIM_CLOCK_SHIFT");
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0)
		return;
	void* p = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p != MAP_FAILED)
		shift = (volatile const int64_t*)p;
}

int clock_gettime(clockid_t clock, struct timespec* ts)
{
	if (!real_clock_gettime)  /* called before this library's constructor */
		real_clock_gettime = (int (*)(clockid_t, struct timespec*))dlsym(RTLD_NEXT, "clock_gettime");
	int r = real_clock_gettime(clock, ts);
	if (r == 0 && shift && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
		ts->tv_sec += *shift;
	return r;
}

time_t time(time_t* t)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (t)
		*t = ts.tv_sec;
	return ts.tv_sec;
}

int gettimeofday(struct timeval* tv, void* tz)
{
	struct timespec ts;
	(void)tz;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (tv) {
		tv->tv_sec = ts.tv_sec;
		tv->tv_usec = ts.tv_nsec / 1000;
	}
	return 0;
}
