"""Fixed features of a location on the sphere, for MoGE's metadata encoder φ.

Two encodings of (latitude, longitude) in degrees, each followed in the router by a learned linear map:

* :func:`fourier_encoding` -- sin/cos of 1..F multiples of every column (read as degrees); it also takes
  metadata that are not coordinates.
* :func:`spherical_harmonics` -- the real spherical harmonics Y_l^m of the point, l = 0..L-1 and
  m = -l..l (L² features), as SatCLIP's location encoder uses them before its network. L is SatCLIP's
  ``legendre_polys`` (the MoGE paper's "Legendre polynomials of degree 10" is L = 10). Nothing pretrained
  is loaded: the map after the features is trained with the rest of the router, like the paper's randomly
  initialised SatCLIP.

The harmonics are orthonormal over the sphere (∫ Y_i Y_j dΩ = δ_ij), with colatitude θ = 90° − latitude,
azimuth φ = longitude, and no Condon-Shortley phase:

    Y_l^0   = N_l^0 P_l(cos θ)
    Y_l^m   = √2 N_l^m P_l^m(cos θ) cos(m φ)      (m > 0)
    Y_l^-m  = √2 N_l^m P_l^m(cos θ) sin(m φ)      (m > 0)
    N_l^m   = √((2l + 1) / (4π) · (l - m)! / (l + m)!)

P_l^m is built by the standard three-term recurrence in float64 (exact to rounding for the degrees a
router uses, tested up to L = 12).
"""

from __future__ import annotations

import math

import torch

SPHERICAL_HARMONICS_MAX_DEGREE = 40  # (l + m)! stays far inside float64 below this


def fourier_encoding(metadata: torch.Tensor, frequencies: int) -> torch.Tensor:
    """sin/cos of 1..F multiples of each column read as degrees: (N, M) -> (N, 2 M F); smooth on the sphere.

    Raises nothing.
    """
    radians = torch.deg2rad(metadata).unsqueeze(-1) * torch.arange(1, frequencies + 1, device=metadata.device)
    return torch.cat([radians.sin(), radians.cos()], dim=-1).flatten(1)


def _associated_legendre(x: torch.Tensor, degree: int) -> dict[tuple[int, int], torch.Tensor]:
    """P_l^m(x) for 0 <= m <= l < degree, without the Condon-Shortley phase (so P_1^1 = √(1 - x²))."""
    sine = (1 - x * x).clamp_min(0).sqrt()
    p: dict[tuple[int, int], torch.Tensor] = {}
    for m in range(degree):
        p[m, m] = math.prod(range(1, 2 * m, 2)) * sine**m  # (2m - 1)!! sin^m θ
        if m + 1 < degree:
            p[m + 1, m] = (2 * m + 1) * x * p[m, m]
        for ell in range(m + 2, degree):
            p[ell, m] = ((2 * ell - 1) * x * p[ell - 1, m] - (ell + m - 1) * p[ell - 2, m]) / (ell - m)
    return p


def spherical_harmonics(latlon: torch.Tensor, degree: int) -> torch.Tensor:
    """The real spherical harmonics of each (latitude, longitude) in degrees: (N, 2) -> (N, degree²).

    Column l² + l + m holds Y_l^m (l = 0..degree-1, m = -l..l). Raises ValueError for input that is not
    (N, 2) or a degree outside 1..SPHERICAL_HARMONICS_MAX_DEGREE.
    """
    if latlon.dim() != 2 or latlon.shape[1] != 2:
        raise ValueError(f"spherical harmonics: need (N, 2) latitude/longitude, got shape {tuple(latlon.shape)}")
    if not 1 <= degree <= SPHERICAL_HARMONICS_MAX_DEGREE:
        raise ValueError(f"spherical harmonics: degree must be in 1..{SPHERICAL_HARMONICS_MAX_DEGREE}, got {degree}")
    radians = torch.deg2rad(latlon.double())
    colatitude, azimuth = math.pi / 2 - radians[:, 0], radians[:, 1]
    legendre = _associated_legendre(colatitude.cos(), degree)
    columns = []
    for ell in range(degree):
        for m in range(-ell, ell + 1):
            a = abs(m)
            ratio = math.exp(math.lgamma(ell - a + 1) - math.lgamma(ell + a + 1))  # (l - |m|)! / (l + |m|)!
            norm = math.sqrt((2 * ell + 1) / (4 * math.pi) * ratio)
            if m == 0:
                columns.append(norm * legendre[ell, 0])
            else:
                angle = torch.cos(a * azimuth) if m > 0 else torch.sin(a * azimuth)
                columns.append(math.sqrt(2) * norm * legendre[ell, a] * angle)
    return torch.stack(columns, dim=1).to(latlon.dtype)
