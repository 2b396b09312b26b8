// Helpers for the CNI plugin tests: run the plugin in-process and build
// environments and configs.
#pragma once

#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cni/plugin.h"

namespace ruleplane::cni::testing {

struct RunResult {
  int rc = -1;
  std::string out;
  std::string err;

  // The error JSON on stdout (null if stdout is not JSON).
  nlohmann::json Error() const { return nlohmann::json::parse(out, nullptr, false); }
  int code() const {
    nlohmann::json e = Error();
    return e.is_object() && e.contains("code") && e["code"].is_number_integer() ? e["code"].get<int>() : -1;
  }
  std::string msg() const {
    nlohmann::json e = Error();
    return e.is_object() && e.contains("msg") && e["msg"].is_string() ? e["msg"].get<std::string>() : "";
  }
};

inline RunResult RunCni(const std::map<std::string, std::string>& env, const std::string& in) {
  RunResult r;
  r.rc = RunPlugin(env, in, &r.out, &r.err);
  return r;
}

inline std::map<std::string, std::string> EnvFor(const std::string& command) {
  return {
      {"CNI_COMMAND", command},
      {"CNI_CONTAINERID", "ctr-1"},
      {"CNI_NETNS", "/var/run/netns/cni-1234"},
      {"CNI_IFNAME", "eth0"},
      {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;"
                   "K8S_POD_INFRA_CONTAINER_ID=ctr-1;K8S_POD_UID=0b5c-uid"},
      {"CNI_PATH", "/opt/cni/bin"},
  };
}

// A prevResult as the bridge plugin returns it: host bridge, host veth,
// pod interface eth0 (index 2).
inline constexpr const char* kBridgePrevResult =
    R"({"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},)"
    R"({"name":"veth1","mac":"aa:bb:cc:dd:ee:02"},)"
    R"({"name":"eth0","mac":"aa:bb:cc:dd:ee:03","sandbox":"/var/run/netns/cni-1234"}],)"
    R"("ips":[{"interface":2,"address":"10.22.0.5/16","gateway":"10.22.0.1"},)"
    R"({"interface":2,"address":"fd00:0:0::5/64"}],"dns":{}})";

// A network config; `extra` is spliced in verbatim (",\"k\":v" pairs).
inline std::string Conf(const std::string& version, const std::string& socket, const std::string& extra = "") {
  return absl::StrCat(R"({"cniVersion":")", version, R"(","name":"podnet","type":"ruleplane","socket":")",
                      socket, "\"", extra, "}");
}

}  // namespace ruleplane::cni::testing
