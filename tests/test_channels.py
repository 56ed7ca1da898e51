"""The one width rounding (e3d.channels): its two tie rules, and the bounds."""
from e3d.channels import round_channels


def test_a_tie_goes_up_or_to_the_even_multiple():
    assert round_channels(20, 8, ties="up") == 24 and round_channels(20, 8, ties="even") == 16
    assert round_channels(36, 8, ties="even") == 32  # Table 9: 1.5 x 24 (the E3D space needs ties to even)
    assert round_channels(10, 4, ties="up") == 12 and round_channels(10, 4, ties="even") == 8
    assert round_channels(19.9, 8, ties="up") == round_channels(19.9, 8, ties="even") == 16  # no tie: the nearest


def test_bounds():
    assert round_channels(3, 8, ties="up") == 8  # at least the divisor by default
    assert round_channels(3, 8, ties="even", low=16) == 16
    assert round_channels(5000, 8, ties="even", low=8, high=640) == 640
