// Provider descriptors from GET /v1/providers (cached for the page's life), and what the
// console knows beyond them: how to recognise an API key, and the AWS regions to offer.

import { get } from "./api.js";

let cache = null;

export async function providers() {
  if (!cache) {
    cache = get("/v1/providers").then((b) => (Array.isArray(b) ? b : b.data || b.providers || []));
    cache.catch(() => { cache = null; });
  }
  return cache;
}

export async function descriptor(id) {
  return (await providers()).find((p) => p.id === id) || null;
}

export function displayName(list, id) {
  const p = (list || []).find((x) => x.id === id);
  return p ? p.displayName || p.id : id;
}

/** The provider an API key belongs to, from its form; null when unknown. */
export function detectProvider(key) {
  const k = key.trim();
  if (k.startsWith("sk-ant-")) return "anthropic";
  if (k.startsWith("gsk_")) return "groq";
  if (k.startsWith("pplx-")) return "perplexity";
  if (k.startsWith("AIza")) return "gemini";
  if (k.startsWith("sk-")) return "openai";
  return null;
}

/** Whether the provider authenticates with an IAM role (the Bedrock family). */
export function isAws(desc) {
  if (!desc) return false;
  const fields = (desc.configFields || []).map((f) => f.name);
  return fields.includes("iamRoleArn") || desc.auth === "iam-role" || String(desc.id).startsWith("aws-");
}

export const AWS_REGIONS = [
  "us-east-1", "us-east-2", "us-west-2", "ca-central-1", "sa-east-1",
  "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2",
  "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
  "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
  "us-gov-west-1", "us-gov-east-1",
];

export const PERIODS = ["minute", "hour", "day", "week", "month", "lifetime"];
