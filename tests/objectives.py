"""The facility-location objective in float64, the independent yardstick of selection tests."""
import torch


def facility_objective(x, labels, chosen, similarity="distance"):
    """F(S) = sum over classes and rows of max_{j in S} s(i, j), in float64 from torch.cdist,
    with s = max K - K (K the distance, or its square for ``sqdistance``) or exp(-d / dim)."""
    x, labels, chosen = x.double().cpu(), labels.cpu(), chosen.cpu()
    total = 0.0
    for c in labels.unique().tolist():
        rows = (labels == c).nonzero().squeeze(1)
        d = torch.cdist(x[rows], x[rows])
        if similarity == "exp":
            s = torch.exp(-d / x.shape[1])
        else:
            cost = d * d if similarity == "sqdistance" else d
            s = cost.max() - cost
        picked = torch.isin(rows, chosen).nonzero().squeeze(1)
        if picked.numel():
            total += float(s[:, picked].max(1).values.sum())
    return total
