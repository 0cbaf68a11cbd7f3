"""rigctl plan: placement, engine flags and speed for every deployment."""

from __future__ import annotations

import importlib

from .. import sizing
from ..spec.models import ModelArch, Stack
from . import engines, images
from .model import DeploymentPlan, Plan, Service, Speed

# stack -> module in provisioner.plan with plan(ctx, dep, fit, addresses) -> list[Service]
STACK_PLANNERS = {
    Stack.llamacpp: "llamacpp",
    Stack.llamacpp_rpc: "llamacpp",
    Stack.ollama: "ollama",
    Stack.vllm: "vllm",
    Stack.tabbyapi: "tabbyapi",
    Stack.exo: "exo",
    Stack.petals: "petals",
}


def build_plan(ctx, addresses: dict[str, str] | None = None) -> Plan:
    deployments = []
    for dep in ctx.rig.serve:
        fit = sizing.fit(ctx, dep)
        mod = importlib.import_module(f"provisioner.plan.{STACK_PLANNERS[dep.stack]}")
        services = mod.plan(ctx, dep, fit, addresses)
        images.assign(ctx.rig, dep, services)
        model = ctx.model(dep)
        name = model.name if model is not None else str(dep.model)
        speed = None
        try:
            from .speed import estimate
        except ImportError:  # speed model not built yet
            estimate = None
        if estimate is not None and fit is not None:
            speed = estimate(ctx, dep, fit)
        deployments.append(DeploymentPlan(dep.name, dep.stack.value, name if not isinstance(dep.model, ModelArch) else dep.model.name,
                                          dep.format, fit, services, speed, list(fit.notes) if fit else []))
    plan = Plan(ctx.rig.name, deployments)
    engines.assign(ctx, plan)  # one build per backend and rig, once every service is placed
    return plan


__all__ = ["build_plan", "Plan", "DeploymentPlan", "Service", "Speed"]
