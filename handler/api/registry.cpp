// The handler registry (type name -> factory, filled by LAIM_HANDLER at
// static initialisation), this host's names, and handlers_create().
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>

#include "common/log.h"
#include "common/text.h"
#include "handler/api/handler.h"

namespace laim {

namespace {

// A function-local static: LAIM_HANDLER lines in other translation units
// run before main() in unspecified order, and must find the map built.
std::map<std::string, HandlerFactory, std::less<>>& registry()
{
	static std::map<std::string, HandlerFactory, std::less<>> map;
	return map;
}

std::string join(const std::vector<std::string>& v, const char* sep)
{
	std::string out;
	for (const std::string& s : v) {
		if (!out.empty())
			out += sep;
		out += s;
	}
	return out;
}

}  // namespace

HandlerRegistration::HandlerRegistration(const char* type, HandlerFactory factory)
{
	if (!registry().emplace(type, factory).second)
		fatalx("handler type \"%s\" registered twice", type);
}

namespace {
std::vector<std::string> local_domains;  // written before any delivery thread starts
}  // namespace

void set_local_domains(std::vector<std::string> domains)
{
	local_domains = std::move(domains);
}

std::string host_name()
{
	return local_domains.empty() ? "localhost" : local_domains.front();
}

bool is_local_address(std::string_view rcpt)
{
	size_t at = rcpt.rfind('@');
	if (at == std::string_view::npos)
		return true;
	std::string_view dom = rcpt.substr(at + 1);
	return std::any_of(local_domains.begin(), local_domains.end(),
			   [dom](const std::string& d) { return iequal(d, dom); });
}


bool same_recipient(std::string_view a, std::string_view b)
{
	if (is_local_address(a) && is_local_address(b))
		return iequal(local_part(a), local_part(b));
	size_t at_a = a.rfind('@'), at_b = b.rfind('@');
	return at_a != std::string_view::npos && at_b != std::string_view::npos && local_part(a) == local_part(b) &&
	       iequal(a.substr(at_a), b.substr(at_b));
}

HandlerFactory handler_factory(std::string_view type)
{
	auto it = registry().find(type);
	return it == registry().end() ? nullptr : it->second;
}

std::vector<std::string> handler_types()
{
	std::vector<std::string> out;
	for (const auto& [name, factory] : registry())
		out.push_back(name);
	return out;
}

// ---------------------------------------------------------------- create

namespace {

// Links what each instance's options name (HandlerOptions::instance()) to
// the instance of that name and type; fails at the option's line.
void link_instances(const Config& cfg, const std::deque<HandlerOptions>& opts, std::vector<ConfiguredHandler>& out)
{
	for (const HandlerOptions& o : opts) {
		for (const HandlerOptions::Link& l : o.links()) {
			const std::string& want = l.link.name();
			auto section = std::find_if(cfg.handlers.begin(), cfg.handlers.end(),
						    [&want](const HandlerSection& s) { return s.name == want; });
			if (section == cfg.handlers.end())
				o.fail(l.key.c_str(), "no handler instance named \"" + want + "\"");
			if (section->type != l.type)
				o.fail(l.key.c_str(), "instance \"" + want + "\" is of type " + section->type +
							      ", expected one of type " + l.type);
			l.link.link(out[static_cast<size_t>(section - cfg.handlers.begin())].handler);
		}
	}
}

}  // namespace

// Builds every configured instance: the factory reads and validates its
// options, then any key it did not read is an error. A constructor that
// throws something other than ConfigError is reported at its section.
// Once all are built, the instances that options name are linked.
std::vector<ConfiguredHandler> handlers_create(const Config& cfg, Secrets& secrets)
{
	std::vector<ConfiguredHandler> out;
	std::deque<HandlerOptions> all_opts;  // kept for the links' errors
	for (const HandlerSection& section : cfg.handlers) {
		HandlerFactory factory = handler_factory(section.type);
		if (!factory) {
			const YamlNode* type = section.options.find("type");
			throw ConfigError(cfg.file, type ? type->line : section.line,
					  "handlers." + section.name + ".type",
					  "unknown handler type \"" + section.type + "\" (known: " +
						  join(handler_types(), ", ") + ")");
		}
		HandlerOptions& opts = all_opts.emplace_back(section, cfg.file, &secrets, cfg.delivery_timeout);
		ConfiguredHandler h;
		h.name = section.name;
		try {
			h.handler = factory(opts);
		} catch (const ConfigError&) {
			throw;
		} catch (const std::exception& e) {
			throw ConfigError(cfg.file, section.line, "handlers." + section.name, e.what());
		}
		h.workers = static_cast<unsigned>(opts.integer("workers", h.handler->default_workers(), 1, MAX_WORKERS));
		opts.check_unused();
		out.push_back(std::move(h));
	}
	link_instances(cfg, all_opts, out);
	return out;
}

}  // namespace laim
