/* address_families FAMILY... -- COMMAND [ARG...]: runs COMMAND with
 * socket(2) refused (EAFNOSUPPORT) for every address family but the
 * numbers given, as systemd's RestrictAddressFamilies= does, so that a
 * case can run laimd under the shipped unit's restriction. */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv)
{
	int allowed[64] = {0};
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		int family = atoi(argv[i]);
		if (family < 0 || family >= 64)
			return 64;
		allowed[family] = 1;
	}
	if (i + 1 >= argc)
		return 64;
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	for (int family = 0; family < 64; family++)
		if (!allowed[family] &&
		    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
				     SCMP_A0(SCMP_CMP_EQ, family)) != 0)
			return 70;
	if (seccomp_load(ctx) != 0)
		return 70;
	execvp(argv[i + 1], argv + i + 1);
	perror(argv[i + 1]);
	return 127;
}
