#include "agent/backend/snat_backend.h"

#include "agent/backend/bpf_snat_backend.h"
#include "agent/backend/nft_snat_backend.h"

namespace ruleplane::backend {

std::unique_ptr<SnatBackend> MakeSnatBackend(const core::SnatSettings& settings) {
  switch (settings.mode) {
    case core::SnatMode::kNftables: return std::make_unique<NftSnatBackend>(settings);
    case core::SnatMode::kBpf: return std::make_unique<BpfSnatBackend>(settings);
    case core::SnatMode::kOff: break;
  }
  return std::make_unique<OffSnatBackend>();
}

render::BaseRuleset RenderFullBase(const render::Layout& layout) {
  render::BaseRuleset base = render::RenderBase(layout);
  MakeSnatBackend(layout.snat)->PlanNft(base);
  return base;
}

}  // namespace ruleplane::backend
