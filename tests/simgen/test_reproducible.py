"""simgen.tools.reproducible: CPU-independent arithmetic, checked against exact results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simgen.tools.reproducible import (
    apply_rotation,
    center_of_mass,
    complex_gram,
    complex_multiply,
    compose_rotations,
    exp,
    inv_small,
    solve_small,
)


def test_complex_gram_is_exact_for_small_integers():
    rng = np.random.default_rng(0)
    a = (rng.integers(-8, 8, (50, 4)) + 1j * rng.integers(-8, 8, (50, 4))).astype(np.complex64)
    b = (rng.integers(-8, 8, (50, 6)) + 1j * rng.integers(-8, 8, (50, 6))).astype(np.complex64)
    exact = a.astype(np.complex128).T @ b.astype(np.complex128)  # integers: exact in any order
    assert np.array_equal(complex_gram(a, b), exact.astype(np.complex64))


def test_complex_gram_is_as_precise_as_float32_and_independent_of_order():
    rng = np.random.default_rng(1)
    a = (rng.normal(size=(3000, 5)) + 1j * rng.normal(size=(3000, 5))).astype(np.complex64)
    b = np.exp(2j * np.pi * rng.uniform(size=(3000, 7))).astype(np.complex64)
    reference = a.astype(np.complex128).T @ b.astype(np.complex128)
    got = complex_gram(a, b)
    assert np.abs(got - reference).max() < 1e-5 * np.abs(a).max() * np.sqrt(len(a))
    order = rng.permutation(len(a))  # summation order: the same bits
    assert np.array_equal(complex_gram(a[order], b[order]), got)


def test_complex_multiply_rounds_each_operation_once():
    a = np.array([1 + 2j, 3 - 1j], np.complex64)
    b = np.array([2 - 1j, 0.5 + 0.25j], np.complex64)
    assert np.array_equal(complex_multiply(a, b), np.array([4 + 3j, 1.75 + 0.25j], np.complex64))


def test_small_solver_and_inverse():
    matrix = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [2.0, 0.0, 3.0]])  # needs a pivot
    x = np.array([1.0, -2.0, 0.5])
    assert np.allclose(solve_small(matrix, matrix @ x), x, rtol=0, atol=1e-15)
    assert np.allclose(inv_small(matrix) @ matrix, np.eye(3), rtol=0, atol=1e-15)
    with pytest.raises(np.linalg.LinAlgError):
        solve_small(np.zeros((2, 2)), np.ones(2))


def test_rotations_centre_of_mass_and_exp():
    theta = 0.3
    rz = np.array(
        [[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]]
    )
    positions = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert np.allclose(apply_rotation(positions, rz), positions @ rz.T, rtol=0, atol=1e-15)
    assert np.allclose(compose_rotations(rz, rz.T), np.eye(3), rtol=0, atol=1e-15)
    assert np.array_equal(center_of_mass(positions, [1.0, 3.0]), [0.25, 1.5, 0.0])
    values = np.array([-1.0, 0.0, 0.5, 2.0])
    assert np.array_equal(exp(values), [math.exp(v) for v in values])
