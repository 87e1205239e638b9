# A command fed by mail never runs as the uid of laimd's handler or smtp
# process: it could signal or trace them and read the spool. At SIGHUP
# a pipe handler's user is checked against the users running now, not
# against the user: and smtp_user: of the new file, which take effect
# only at the next restart: a reload that names the running handler's
# (or smtp process's) user for a pipe command, beside a user: (or
# smtp_user:) change, is refused with the pipe's FILE:LINE, and mail
# still goes the old way.
import sys
sys.dont_write_bytecode = True
import signal
from harness import *


def main():
	d = Laimd().start()
	base = dict(d.config)
	for key, running in (("user", TEST_USER), ("smtp_user", TEST_SMTP_USER)):
		d.config = dict(base)
		d.config["handlers"] = dict(base["handlers"], run={"type": "pipe", "command": ["/bin/cat"], "user": running})
		d.config["routes"] = [{"match": "run@*", "handlers": ["run"]}] + base["routes"]
		d.config[key] = "nobody"  # takes effect at the next restart only
		d.write_config()
		mark = d.mark()
		d.send_signal(signal.SIGHUP)
		m = d.wait_log(r"(\S+):(\d+): handlers\.run\.user: (.*); keeping the previous configuration$", since=mark)
		check_eq((m.group(1), int(m.group(2))), (d.confpath, d.option_line("run", "user")),
			 "%s: FILE:LINE of the refused reload" % key)
		check(m.group(3).startswith('"%s" is laimd\'s %s' % (running, key)) and "until the next restart" in m.group(3),
		      "%s: reason of the refused reload: %r" % (key, m.group(3)))
		check(not d.search_log(r"configuration reloaded$", mark), "%s: the reload was taken" % key)
		qid = d.send(rcpts=["run@test.laim.example"])
		d.wait_log(r"%s: to=<run@test\.laim\.example>, handler=inbox, status=delivered" % qid, since=mark)
		check(not d.search_log(r"handler=run", mark), "%s: the pipe command was asked for" % key)


run(main)
