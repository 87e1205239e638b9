// The parent's restart decision for a child that died (supervise() in
// parent/parent.cpp acts on it), apart from the process handling so that
// regress/unit/test_parent.cpp can check it.
#include <algorithm>

#include "parent/parent.h"

namespace laim {

unsigned restart_delay(unsigned& backoff, time_t started, time_t died)
{
	if (died - started > RESTART_STABLE)
		backoff = 1;
	unsigned delay = backoff;
	backoff = std::min(backoff * 2, RESTART_MAX_DELAY);
	return delay;
}

}  // namespace laim
