# A command fed by mail never runs as the uid of laimd's handler or smtp
# process: it could signal or trace them and read the spool. At SIGHUP
# a pipe handler's user is checked against the users running now, not
# against the user: and smtp_user: of the new file, which take effect
# only at the next restart: a reload that names the running handler's
# (or smtp process's) user for a pipe command, beside a user: (or
# smtp_user:) change, is refused with the pipe's FILE:LINE, and mail
# still goes the old way. Alias commands run as nobody: a reload that
# turns alias_commands on while the smtp process runs as nobody is
# refused with alias_commands' FILE:LINE, even when the same edit moves
# smtp_user: elsewhere (laimd -n's refusal of the file: t_configcheck).
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



def alias_commands_as_nobody():
	d = Laimd(name="t_command_users_alias", smtp_user="nobody").start()
	d.config["alias_commands"] = True
	d.config["smtp_user"] = TEST_SMTP_USER  # takes effect at the next restart only
	d.write_config()
	mark = d.mark()
	d.send_signal(signal.SIGHUP)
	m = d.wait_log(r"(\S+):(\d+): alias_commands: (.*); keeping the previous configuration$", since=mark)
	with open(d.confpath) as f:
		line = f.read().split("\n").index("alias_commands: true") + 1
	check_eq((m.group(1), int(m.group(2))), (d.confpath, line), "FILE:LINE of the refused reload")
	check(m.group(3).startswith('alias commands run as nobody, and laimd\'s smtp_user "nobody" has its uid'),
	      "reason of the refused reload: %r" % m.group(3))
	check(not d.search_log(r"configuration reloaded$", mark), "the reload was taken")


def both():
	main()
	alias_commands_as_nobody()


run(both)
